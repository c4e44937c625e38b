package filestamp

import (
	"os"
	"path/filepath"
	"testing"
)

func TestStampChangesWithEveryVersion(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	if _, err := Of(p); err == nil {
		t.Fatal("a stamp of a file that does not exist")
	}
	if err := os.WriteFile(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	first, err := Of(p)
	if err != nil || first == (Stamp{}) {
		t.Fatalf("stamp %v, %v", first, err)
	}
	if again, _ := Of(p); again != first {
		t.Error("the same file has two stamps")
	}
	// An atomic replacement with content of the same size and time.
	tmp := filepath.Join(dir, "key.new")
	if err := os.WriteFile(tmp, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	if err := os.Chtimes(tmp, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	if replaced, _ := Of(p); replaced == first {
		t.Error("an atomic replacement kept the stamp")
	}
	// An in-place rewrite of another size.
	before, _ := Of(p)
	if err := os.WriteFile(p, []byte("three"), 0o600); err != nil {
		t.Fatal(err)
	}
	if rewritten, _ := Of(p); rewritten == before {
		t.Error("an in-place rewrite kept the stamp")
	}
}
