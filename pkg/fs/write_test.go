package fs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/fs/memstore"
	"github.com/cosmount/cosmount/pkg/volume"
)

func TestConcurrentWriters(t *testing.T) {
	store := memstore.New()
	_, mnt := mountT(t, store, testOptions())
	const writers, files = 8, 50
	content := func(w, i int) []byte {
		return bytes.Repeat([]byte(fmt.Sprintf("writer %d file %d;", w, i)), 100+w*i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			dir := filepath.Join(mnt, fmt.Sprintf("w%d", w))
			if err := os.Mkdir(dir, 0o755); err != nil {
				errs <- err
				return
			}
			for i := 0; i < files; i++ {
				if err := writeFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), content(w, i)); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for w := 0; w < writers; w++ {
		for i := 0; i < files; i++ {
			key := fmt.Sprintf("w%d/f%d", w, i)
			body, _ := object(t, store, key)
			if body != string(content(w, i)) {
				t.Fatalf("%s corrupted (%d bytes)", key, len(body))
			}
			got, err := readFile(filepath.Join(mnt, key))
			if err != nil || !bytes.Equal(got, content(w, i)) {
				t.Fatalf("read back %s: %d bytes, %v", key, len(got), err)
			}
		}
	}
}

func TestFailedUploadIsReportedAndKept(t *testing.T) {
	tests := []struct {
		name  string
		err   error
		errno syscall.Errno
	}{
		{"unavailable", fmt.Errorf("injected: %w", cos.ErrUnavailable), syscall.EIO},
		{"access denied", &cos.Error{Op: "PutObject", Kind: cos.ErrAccessDenied}, syscall.EACCES},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := memstore.New()
			m, mnt := mountT(t, store, testOptions())

			// fsync reports the failure; the data stays and a later fsync succeeds.
			f, err := createRaw(filepath.Join(mnt, "synced"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString("precious"); err != nil {
				t.Fatal(err)
			}
			store.FailOp(memstore.OpPut, tc.err)
			wantErrno(t, "fsync", f.Sync(), tc.errno)
			store.SetFault(nil)
			if err := f.Sync(); err != nil {
				t.Fatalf("retry fsync: %v", err)
			}
			if body, _ := object(t, store, "synced"); body != "precious" {
				t.Errorf("after retry: %q", body)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}

			// close() reports the failure; the data is still there for Flush.
			f, err = createRaw(filepath.Join(mnt, "closed"))
			if err != nil {
				t.Fatal(err)
			}
			store.FailOp(memstore.OpPut, tc.err)
			if _, err := f.WriteString("also precious"); err != nil {
				t.Fatal(err)
			}
			wantErrno(t, "close", f.Close(), tc.errno)
			store.SetFault(nil)
			if err := m.Flush(context.Background()); err != nil {
				t.Fatalf("flush after failure: %v", err)
			}
			if body, _ := object(t, store, "closed"); body != "also precious" {
				t.Errorf("after flush: %q", body)
			}
		})
	}
}

func TestDupFlushUploadsOnce(t *testing.T) {
	store := memstore.New()
	_, mnt := mountT(t, store, testOptions())
	f, err := createRaw(filepath.Join(mnt, "f"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("x"); err != nil {
		t.Fatal(err)
	}
	fd2, err := f.Dup()
	if err != nil {
		t.Fatal(err)
	}
	store.ResetCounts()
	if err := syscall.Close(fd2); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if n := store.Count(memstore.OpPut); n != 1 {
		t.Errorf("two closes of one unchanged file uploaded %d times", n)
	}
}

func TestReadOnlyMount(t *testing.T) {
	store := memstore.New()
	putObject(t, store, "f", "read me", nil)
	opts := testOptions()
	opts.ReadOnly = true
	_, mnt := mountT(t, store, opts)
	if b, err := readFile(filepath.Join(mnt, "f")); err != nil || string(b) != "read me" {
		t.Fatalf("read: %q %v", b, err)
	}
	p := filepath.Join(mnt, "f")
	wantErrno(t, "create", writeFile(filepath.Join(mnt, "new"), nil), syscall.EROFS)
	_, err := openRaw(p, syscall.O_WRONLY, 0)
	wantErrno(t, "open for write", err, syscall.EROFS)
	wantErrno(t, "mkdir", os.Mkdir(filepath.Join(mnt, "d"), 0o755), syscall.EROFS)
	wantErrno(t, "unlink", os.Remove(p), syscall.EROFS)
	wantErrno(t, "rename", os.Rename(p, p+"2"), syscall.EROFS)
	wantErrno(t, "chmod", os.Chmod(p, 0o600), syscall.EROFS)
	wantErrno(t, "truncate", os.Truncate(p, 0), syscall.EROFS)
	wantErrno(t, "symlink", os.Symlink("f", filepath.Join(mnt, "l")), syscall.EROFS)
	if keys := store.Keys(); len(keys) != 1 {
		t.Errorf("read-only mount changed the store: %v", keys)
	}
}

// The FUSE methods refuse writes themselves too, not only the kernel's ro flag.
func TestReadOnlyNodesRefuseWrites(t *testing.T) {
	opts := testOptions()
	opts.ReadOnly = true
	fsys, err := New(memstore.New(), opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	root := fsys.root
	if _, err := root.Mkdir(ctx, &fuseMkdir); err != syscall.EROFS {
		t.Errorf("mkdir: %v", err)
	}
	if err := root.Remove(ctx, &fuseRemove); err != syscall.EROFS {
		t.Errorf("remove: %v", err)
	}
}

// Pending tells changes that no writer has heard about (an unpublish must
// wait for them) from failed uploads whose writer was told by close/fsync.
func TestPendingSplitsReportedFailures(t *testing.T) {
	store := memstore.New()
	m, mnt := mountT(t, store, testOptions())
	want := func(step string, p volume.Pending) {
		t.Helper()
		if got := m.FS().Pending(); got != p {
			t.Fatalf("%s: Pending = %+v, want %+v", step, got, p)
		}
	}
	want("idle", volume.Pending{})

	f, err := createRaw(filepath.Join(mnt, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("12345"); err != nil {
		t.Fatal(err)
	}
	want("written, not closed", volume.Pending{Files: 1, Bytes: 5})

	store.FailOp(memstore.OpPut, fmt.Errorf("injected: %w", cos.ErrUnavailable))
	wantErrno(t, "fsync", f.Sync(), syscall.EIO)
	want("fsync failed and said so", volume.Pending{FailedFiles: 1, FailedBytes: 5})

	if _, err := f.WriteString("678"); err != nil {
		t.Fatal(err)
	}
	want("new changes after the reported failure", volume.Pending{Files: 1, Bytes: 8})

	wantErrno(t, "close", f.Close(), syscall.EIO)
	want("close failed and said so", volume.Pending{FailedFiles: 1, FailedBytes: 8})

	store.SetFault(nil)
	if err := m.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	want("flushed", volume.Pending{})
	if body, _ := object(t, store, "a"); body != "12345678" {
		t.Errorf("object = %q", body)
	}
}

// An upload the store refuses (AccessDenied) is not tried again at release:
// the writer was told, the retry would be refused too, and a pod looping on
// a denied write would otherwise double the requests. The data stays for a
// later flush.
func TestRefusedUploadIsNotRetriedAtRelease(t *testing.T) {
	store := memstore.New()
	m, mnt := mountT(t, store, testOptions())
	store.FailOp(memstore.OpPut, &cos.Error{Op: "PutObject", Kind: cos.ErrAccessDenied})
	store.ResetCounts()
	f, err := createRaw(filepath.Join(mnt, "denied"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("kept"); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "close", f.Close(), syscall.EACCES)
	// Release runs after close returns; give it the time it would take.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && m.FS().Pending().FailedFiles != 1 {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if n := store.Count(memstore.OpPut); n != 1 {
		t.Errorf("%d PUTs for one refused close, want 1", n)
	}
	store.SetFault(nil)
	if err := m.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if body, _ := object(t, store, "denied"); body != "kept" {
		t.Errorf("after the refusal was lifted: %q", body)
	}
}
