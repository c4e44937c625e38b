package fs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/fs/memstore"
)

func TestRenameFileKeepsMetadata(t *testing.T) {
	store := memstore.New()
	putObject(t, store, "src", "payload", map[string]string{"mode": "33216", "uid": "7", "gid": "8", "mtime": "1600000000", "custom": "kept"})
	_, mnt := mountT(t, store, testOptions())
	if err := os.Mkdir(filepath.Join(mnt, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	store.ResetCounts()
	if err := os.Rename(filepath.Join(mnt, "src"), filepath.Join(mnt, "sub", "dst")); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := store.Object("src"); ok {
		t.Error("source still in store")
	}
	body, info := object(t, store, "sub/dst")
	if body != "payload" || info.Metadata["mode"] != "33216" || info.Metadata["custom"] != "kept" {
		t.Errorf("renamed object %q %v", body, info.Metadata)
	}
	// The lookup of src GETs its first bytes (lookupGet); the data itself
	// moves by server-side copy.
	if store.Count(memstore.OpPut) != 0 || store.Count(memstore.OpGet) > 1 || store.Count(memstore.OpCopy) != 1 {
		t.Errorf("rename moved data through the client: %v", store.Counts())
	}
	if _, err := os.Stat(filepath.Join(mnt, "src")); !os.IsNotExist(err) {
		t.Errorf("old name: %v", err)
	}
	b, err := readFile(filepath.Join(mnt, "sub", "dst"))
	if err != nil || string(b) != "payload" {
		t.Errorf("read new name: %q %v", b, err)
	}

	// A file written and renamed before close reaches the store under the new name.
	f, err := createRaw(filepath.Join(mnt, "open"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("still open"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(mnt, "open"), filepath.Join(mnt, "moved")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("!"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if body, _ := object(t, store, "moved"); body != "still open!" {
		t.Errorf("moved open file: %q", body)
	}
	if _, _, ok := store.Object("open"); ok {
		t.Error("old key of an open renamed file remains")
	}
}

func TestRenameDirectoryOf100Files(t *testing.T) {
	store := memstore.New()
	putObject(t, store, "old/", "", nil)
	for i := 0; i < 100; i++ {
		putObject(t, store, fmt.Sprintf("old/f%03d", i), fmt.Sprint(i), nil)
	}
	putObject(t, store, "old/deep/x", "x", nil)
	_, mnt := mountT(t, store, testOptions())
	if _, err := os.ReadDir(filepath.Join(mnt, "old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(mnt, "old"), filepath.Join(mnt, "new")); err != nil {
		t.Fatal(err)
	}
	for _, k := range store.Keys() {
		if strings.HasPrefix(k, "old/") {
			t.Fatalf("key left behind: %s", k)
		}
	}
	if got := len(store.Keys()); got != 102 {
		t.Errorf("%d keys after rename, want 102", got)
	}
	if body, _ := object(t, store, "new/f042"); body != "42" {
		t.Errorf("new/f042 = %q", body)
	}
	ents, err := os.ReadDir(filepath.Join(mnt, "new"))
	if err != nil || len(ents) != 101 {
		t.Errorf("new has %d entries: %v", len(ents), err)
	}
	if b, err := readFile(filepath.Join(mnt, "new/deep/x")); err != nil || string(b) != "x" {
		t.Errorf("read through renamed dir: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "old")); !os.IsNotExist(err) {
		t.Errorf("old dir: %v", err)
	}
	if store.Count(memstore.OpDeleteMany) != 1 {
		t.Errorf("deletes: %v", store.Counts())
	}
	// Renaming onto a non-empty directory is refused.
	shell(t, mnt, "mkdir other && echo y > other/y")
	// POSIX allows either errno here.
	if err := os.Rename(filepath.Join(mnt, "new"), filepath.Join(mnt, "other")); !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		t.Errorf("rename onto a non-empty directory: %v", err)
	}
}

func TestChmodChownUtimesAsMetadata(t *testing.T) {
	store := memstore.New()
	_, mnt := mountT(t, store, testOptions())
	shell(t, mnt, "printf data > f")
	store.ResetCounts()
	p := filepath.Join(mnt, "f")
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 1001, 1002); err != nil {
		t.Fatal(err)
	}
	mt := time.Unix(1500000000, 0)
	if err := os.Chtimes(p, mt, mt); err != nil {
		t.Fatal(err)
	}
	body, info := object(t, store, "f")
	want := map[string]string{"mode": "33152", "uid": "1001", "gid": "1002", "mtime": "1500000000"}
	for k, v := range want {
		if info.Metadata[k] != v {
			t.Errorf("metadata %s = %q, want %q (all: %v)", k, info.Metadata[k], v, info.Metadata)
		}
	}
	if body != "data" {
		t.Errorf("body changed: %q", body)
	}
	if c := store.Counts(); c[memstore.OpPut] != 0 || c[memstore.OpCopy] != 3 {
		t.Errorf("setattr should copy onto itself, not upload: %v", c)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o600 || st.Uid != 1001 || st.Gid != 1002 || !fi.ModTime().Equal(mt) {
		t.Errorf("stat after setattr: %v %d %d %v", fi.Mode(), st.Uid, st.Gid, fi.ModTime())
	}
	// chmod of a directory goes to its marker.
	shell(t, mnt, "mkdir d && chmod 0700 d")
	if _, info := object(t, store, "d/"); info.Metadata["mode"] != "16832" {
		t.Errorf("dir marker metadata %v", info.Metadata)
	}
}

func TestRenameDirectoryWithOpenDirtyFile(t *testing.T) {
	store := memstore.New()
	_, mnt := mountT(t, store, testOptions())
	shell(t, mnt, "mkdir -p src/sub && echo a > src/sub/a")
	f, err := createRaw(filepath.Join(mnt, "src/sub/open"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("before "); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(mnt, "src"), filepath.Join(mnt, "dst")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("after"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if body, _ := object(t, store, "dst/sub/open"); body != "before after" {
		t.Errorf("open file moved with its directory: %q", body)
	}
	if body, _ := object(t, store, "dst/sub/a"); body != "a\n" {
		t.Errorf("dst/sub/a = %q", body)
	}
	for _, k := range store.Keys() {
		if strings.HasPrefix(k, "src/") {
			t.Errorf("left behind: %s", k)
		}
	}
}
