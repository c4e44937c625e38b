package fs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cosmount/cosmount/pkg/fs/memstore"
)

// tempBytes is what the temporary directory holds on disk (allocated
// blocks, so sparse files count what they really use).
func tempBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(dir, e.Name()), &st); err == nil {
			total += st.Blocks * 512
		}
	}
	return total
}

// A writer rewriting a file larger than the volume's temporary space gets
// ENOSPC before anything is downloaded, and the object stays as it was.
func TestTempLimitRefusesLargeReadModifyWrite(t *testing.T) {
	store := memstore.New()
	big := bytes.Repeat([]byte("x"), 3<<20)
	putObject(t, store, "big.bin", string(big), nil)
	opts := testOptions()
	opts.TempDir = t.TempDir()
	opts.TempLimit = 2 * MiB
	_, dir := mountT(t, store, opts)

	f, err := os.OpenFile(filepath.Join(dir, "big.bin"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, werr := f.WriteAt([]byte("y"), 10)
	cerr := f.Close()
	if !errorsIsENOSPC(werr) && !errorsIsENOSPC(cerr) {
		t.Fatalf("rewrite of a 3 MiB file under a 2 MiB temp_limit: write %v, close %v; want ENOSPC", werr, cerr)
	}
	waitFor(t, "the temporary directory to be empty", func() bool { return tempBytes(t, opts.TempDir) == 0 })
	if got, _ := object(t, store, "big.bin"); got != string(big) {
		t.Error("the object changed")
	}
}

// Writes that would take the volume's temporary files past the limit fail
// with ENOSPC at the write; the disk never holds more than the limit, and
// the space comes back when the files are closed.
func TestTempLimitBoundsRandomWrites(t *testing.T) {
	store := memstore.New()
	putObject(t, store, "a.bin", string(bytes.Repeat([]byte("a"), 1<<20)), nil)
	opts := testOptions()
	opts.TempDir = t.TempDir()
	opts.TempLimit = 3 * MiB
	m, dir := mountT(t, store, opts)

	// Read-modify-write of a: 1 MiB of temporary space.
	a, err := os.OpenFile(filepath.Join(dir, "a.bin"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.WriteAt([]byte("b"), 0); err != nil {
		t.Fatal(err)
	}
	// A new file written at an offset (a sparse temporary file) shares the
	// rest: 1 MiB fits, the next 2 MiB do not.
	b, err := os.Create(filepath.Join(dir, "b.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	chunk := bytes.Repeat([]byte("c"), 1<<20)
	if _, err := b.WriteAt(chunk, MiB); err != nil {
		t.Fatalf("write within the limit: %v", err)
	}
	_, err = b.WriteAt(chunk, 2*MiB)
	if !errorsIsENOSPC(err) {
		t.Fatalf("write past the limit: %v, want ENOSPC", err)
	}
	if n := tempBytes(t, opts.TempDir); n > opts.TempLimit {
		t.Errorf("temporary directory holds %d bytes, more than temp_limit %d", n, opts.TempLimit)
	}
	if used := m.FS().temp.inUse(); used > opts.TempLimit {
		t.Errorf("%d bytes reserved, more than temp_limit", used)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("close of the file whose last write failed: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := object(t, store, "b.bin"); int64(len(got)) != 2*MiB {
		t.Errorf("b.bin has %d bytes, want the 2 MiB written before the refused write", len(got))
	}
	// The kernel sends RELEASE after close(2) returns, without waiting for
	// the answer: the space comes back when the server has handled it.
	waitFor(t, "temporary space to be released after close", func() bool { return m.FS().temp.inUse() == 0 })
}

func errorsIsENOSPC(err error) bool { return errors.Is(err, syscall.ENOSPC) }
