package fs

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/cosmount/cosmount/pkg/fs/memstore"
)

func TestFileLifecycleThroughStore(t *testing.T) {
	store := memstore.New()
	_, mnt := mountT(t, store, testOptions())

	// echo / cat
	shell(t, mnt, "echo hello > hello.txt")
	if body, info := object(t, store, "hello.txt"); body != "hello\n" || info.Metadata["mode"] != "33188" {
		t.Errorf("after echo: %q %v", body, info.Metadata)
	}
	if out := shell(t, mnt, "cat hello.txt"); out != "hello\n" {
		t.Errorf("cat: %q", out)
	}
	// append (read-modify-write of an existing object)
	shell(t, mnt, "echo world >> hello.txt")
	if body, _ := object(t, store, "hello.txt"); body != "hello\nworld\n" {
		t.Errorf("after append: %q", body)
	}
	// overwrite (O_TRUNC)
	shell(t, mnt, "printf new > hello.txt")
	if body, _ := object(t, store, "hello.txt"); body != "new" {
		t.Errorf("after overwrite: %q", body)
	}
	// in-place rewrite of the middle
	f, err := openRaw(filepath.Join(mnt, "hello.txt"), syscall.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("E"), 1); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if body, _ := object(t, store, "hello.txt"); body != "nEw" {
		t.Errorf("after pwrite: %q", body)
	}
	// truncate down, up and to zero
	for _, tc := range []struct {
		size int64
		want string
	}{{2, "nE"}, {4, "nE\x00\x00"}, {0, ""}} {
		if err := os.Truncate(filepath.Join(mnt, "hello.txt"), tc.size); err != nil {
			t.Fatal(err)
		}
		if body, _ := object(t, store, "hello.txt"); body != tc.want {
			t.Errorf("truncate %d: %q, want %q", tc.size, body, tc.want)
		}
	}
	// ftruncate on an open descriptor, then write
	f, err = openRaw(filepath.Join(mnt, "hello.txt"), syscall.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("abcdef")); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(3); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if body, _ := object(t, store, "hello.txt"); body != "abc" {
		t.Errorf("after ftruncate: %q", body)
	}
	// touch makes an empty object
	shell(t, mnt, "touch empty")
	if body, _ := object(t, store, "empty"); body != "" {
		t.Errorf("touch: %q", body)
	}

	// mkdir -p writes markers; files below them
	shell(t, mnt, "mkdir -p a/b/c && echo x > a/b/c/f && echo y > a/g")
	for _, k := range []string{"a/", "a/b/", "a/b/c/"} {
		if _, info := object(t, store, k); info.Metadata["mode"] != "16877" {
			t.Errorf("marker %s metadata %v", k, info.Metadata)
		}
	}
	if out := shell(t, mnt, "ls a"); out != "b\ng\n" {
		t.Errorf("ls a: %q", out)
	}
	// rmdir of a non-empty directory
	wantErrno(t, "rmdir non-empty", syscall.Rmdir(filepath.Join(mnt, "a/b")), syscall.ENOTEMPTY)
	// rm -rf removes every key
	shell(t, mnt, "rm -rf a")
	for _, k := range store.Keys() {
		if strings.HasPrefix(k, "a/") {
			t.Errorf("left after rm -rf: %s", k)
		}
	}
	if _, err := os.Stat(filepath.Join(mnt, "a")); !os.IsNotExist(err) {
		t.Errorf("stat after rm -rf: %v", err)
	}
	// unlink
	if err := os.Remove(filepath.Join(mnt, "empty")); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := store.Object("empty"); ok {
		t.Error("unlinked object still in store")
	}
	keys := store.Keys()
	sort.Strings(keys)
	if strings.Join(keys, ",") != "hello.txt" {
		t.Errorf("keys at the end: %v", keys)
	}
}

func TestPrefixAndImplicitDirectories(t *testing.T) {
	store := memstore.New()
	putObject(t, store, "team/a/b/c.txt", "deep", nil)
	putObject(t, store, "team/both", "object hidden by the directory", nil)
	putObject(t, store, "team/both/inner", "inner", nil)
	putObject(t, store, "other/x", "not visible", nil)
	opts := testOptions()
	opts.Prefix = "team"
	opts.UID, opts.GID, opts.FileMode, opts.DirMode = 1234, 5678, 0o640, 0o750
	_, mnt := mountT(t, store, opts)

	ents, err := os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
		if !e.IsDir() {
			t.Errorf("%s should be a directory", e.Name())
		}
	}
	if strings.Join(names, ",") != "a,both" {
		t.Errorf("root entries %v", names)
	}
	b, err := readFile(filepath.Join(mnt, "a/b/c.txt"))
	if err != nil || string(b) != "deep" {
		t.Fatalf("read implicit path: %q %v", b, err)
	}
	st, err := os.Stat(filepath.Join(mnt, "both"))
	if err != nil || !st.IsDir() {
		t.Fatalf("name that is both object and prefix: %v %v", st, err)
	}
	fi, err := os.Stat(filepath.Join(mnt, "a/b/c.txt"))
	if err != nil {
		t.Fatal(err)
	}
	sys := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o640 || sys.Uid != 1234 || sys.Gid != 5678 {
		t.Errorf("defaults not applied: %v uid %d gid %d", fi.Mode(), sys.Uid, sys.Gid)
	}
	di, _ := os.Stat(filepath.Join(mnt, "a"))
	if di.Mode().Perm() != 0o750 {
		t.Errorf("dir mode %v", di.Mode())
	}
	shell(t, mnt, "echo n > a/new")
	object(t, store, "team/a/new")
}

func TestS3fsMetadataAndSymlinks(t *testing.T) {
	store := memstore.New()
	putObject(t, store, "meta", "x", map[string]string{"mode": "33216", "uid": "42", "gid": "43", "mtime": "1700000000"})
	putObject(t, store, "link", "meta", map[string]string{"mode": "41471"})
	_, mnt := mountT(t, store, testOptions())

	fi, err := os.Stat(filepath.Join(mnt, "meta"))
	if err != nil {
		t.Fatal(err)
	}
	sys := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o700 || sys.Uid != 42 || sys.Gid != 43 || fi.ModTime().Unix() != 1700000000 {
		t.Errorf("s3fs metadata not honoured: %v %d %d %v", fi.Mode(), sys.Uid, sys.Gid, fi.ModTime())
	}
	if target, err := os.Readlink(filepath.Join(mnt, "link")); err != nil || target != "meta" {
		t.Errorf("readlink existing: %q %v", target, err)
	}
	if err := os.Symlink("hello/target", filepath.Join(mnt, "newlink")); err != nil {
		t.Fatal(err)
	}
	if body, info := object(t, store, "newlink"); body != "hello/target" || info.Metadata["mode"] != "41471" {
		t.Errorf("symlink stored as %q %v", body, info.Metadata)
	}
	if target, err := os.Readlink(filepath.Join(mnt, "newlink")); err != nil || target != "hello/target" {
		t.Errorf("readlink new: %q %v", target, err)
	}
}

func TestUnsupportedOperationsFailClearly(t *testing.T) {
	store := memstore.New()
	mounted, mnt := mountT(t, store, testOptions())
	shell(t, mnt, "echo x > f")
	wantErrno(t, "link", os.Link(filepath.Join(mnt, "f"), filepath.Join(mnt, "g")), syscall.EPERM)
	wantErrno(t, "mkfifo", syscall.Mkfifo(filepath.Join(mnt, "fifo"), 0o644), syscall.EPERM)
	wantErrno(t, "setxattr", syscall.Setxattr(filepath.Join(mnt, "f"), "user.x", []byte("1"), 0), syscall.ENOTSUP)
	// Extended attributes fail with ENOTSUP, and the kernel asks the
	// server once per kind of request, not once per file.
	shell(t, mnt, "echo y > g; mkdir d")
	m := mounted.FS()
	before := m.unsupported.Load()
	for _, name := range []string{"f", "g", "d", "f"} {
		_, err := syscall.Getxattr(filepath.Join(mnt, name), "user.x", make([]byte, 64))
		wantErrno(t, "getxattr "+name, err, syscall.ENOTSUP)
		_, err = syscall.Listxattr(filepath.Join(mnt, name), make([]byte, 64))
		wantErrno(t, "listxattr "+name, err, syscall.ENOTSUP)
		wantErrno(t, "removexattr "+name, syscall.Removexattr(filepath.Join(mnt, name), "user.x"), syscall.ENOTSUP)
	}
	if n := m.unsupported.Load() - before; n > 3 {
		t.Errorf("the server answered %d xattr requests for 4 files, want at most one of each kind", n)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); err != nil || st.Blocks == 0 || st.Bavail == 0 {
		t.Errorf("statfs: %+v %v", st, err)
	}
}
