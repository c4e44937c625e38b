package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/fs/memstore"
)

// An unlink whose DELETE fails must not throw away what the application
// wrote and has not saved yet: the unlink reports EIO, the open descriptor
// still reads and saves the data, and a later unlink removes the object.
func TestFailedUnlinkKeepsUnsavedData(t *testing.T) {
	store := memstore.New()
	_, mnt := mountT(t, store, testOptions())
	path := filepath.Join(mnt, "f")
	if err := writeFile(path, []byte("saved;")); err != nil {
		t.Fatal(err)
	}
	f, err := openRaw(path, syscall.O_RDWR|syscall.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("unsaved"); err != nil {
		t.Fatal(err)
	}
	store.FailOp(memstore.OpDelete, fmt.Errorf("injected: %w", cos.ErrUnavailable))
	wantErrno(t, "unlink with a failing DELETE", syscall.Unlink(path), syscall.EIO)
	store.SetFault(nil)

	got := make([]byte, 64)
	n, err := f.ReadAt(got, 0)
	if string(got[:n]) != "saved;unsaved" {
		t.Errorf("after the failed unlink the descriptor reads %q (%v), want %q", got[:n], err, "saved;unsaved")
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync after the failed unlink: %v", err)
	}
	if body, _ := object(t, store, "f"); body != "saved;unsaved" {
		t.Errorf("object after fsync: %q, want %q", body, "saved;unsaved")
	}
	if err := syscall.Unlink(path); err != nil {
		t.Fatalf("second unlink: %v", err)
	}
	if _, _, ok := store.Object("f"); ok {
		t.Error("object still in the store after a successful unlink")
	}
	if err := f.Close(); err != nil {
		t.Errorf("close of the unlinked file: %v", err)
	}
	if _, _, ok := store.Object("f"); ok {
		t.Error("closing the unlinked file uploaded it again")
	}
}

// A directory larger than one listing page is never listed for lookups, so
// its negative cache is not replaced by a listing; expired names must still
// be dropped, or a process that probes many names (a build, a backup)
// grows the server's memory without bound.
func TestNegativeCacheOfLargeDirectoryIsPruned(t *testing.T) {
	store := memstore.New()
	for i := 0; i < 1001; i++ { // one more than a listing page
		putObject(t, store, fmt.Sprintf("big/o%04d", i), "x", nil)
	}
	opts := testOptions()
	opts.NegativeTTL = 10 * time.Second
	f, err := New(store, opts)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.now = func() time.Time { return clock }
	ctx := context.Background()
	n, err := f.root.lookup(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	big := n.(*Dir)
	const perTick = 100
	maxSize := 0
	for i := 0; i < 5000; i++ {
		if i%perTick == 0 {
			clock = clock.Add(opts.NegativeTTL) // every earlier miss has expired
		}
		if _, err := big.lookup(ctx, fmt.Sprintf("missing%d", i)); err != syscall.ENOENT {
			t.Fatalf("lookup of a missing name: %v", err)
		}
		big.mu.Lock()
		maxSize = max(maxSize, len(big.negative))
		complete := big.complete
		big.mu.Unlock()
		if complete {
			t.Fatal("a directory larger than a page was installed as a complete listing")
		}
	}
	// At most the misses of one TTL, doubled by the amortized sweep.
	if limit := 2*perTick + minNegPrune; maxSize > limit {
		t.Errorf("negative cache grew to %d names; want at most %d", maxSize, limit)
	}
	// Names missed within the TTL are still answered from the cache.
	store.ResetCounts()
	if _, err := big.lookup(ctx, "missing4999"); err != syscall.ENOENT {
		t.Fatalf("repeated lookup: %v", err)
	}
	if c := store.Counts(); len(c) != 0 {
		t.Errorf("a fresh negative entry was not used: %v", c)
	}
	big.mu.Lock()
	_, stale := big.negative["missing0"]
	big.mu.Unlock()
	if stale {
		t.Error("a name that expired long ago is still cached")
	}
}

// An s3fs symlink object whose body is longer than a link target can be
// was cut to 4096 bytes, silently pointing the link elsewhere; it is an
// I/O error now. A good one still reads.
func TestReadlinkRefusesBadTargets(t *testing.T) {
	store := memstore.New()
	link := map[string]string{"mode": "41471"} // S_IFLNK | 0777
	putObject(t, store, "long", strings.Repeat("d/", 2100), link)
	putObject(t, store, "nul", "a\x00b", link)
	putObject(t, store, "good", "../target", link)
	_, mnt := mountT(t, store, testOptions())
	for _, name := range []string{"long", "nul"} {
		if target, err := os.Readlink(filepath.Join(mnt, name)); !errors.Is(err, syscall.EIO) {
			t.Errorf("readlink %s: %d bytes, %v; want EIO", name, len(target), err)
		}
	}
	if target, err := os.Readlink(filepath.Join(mnt, "good")); err != nil || target != "../target" {
		t.Errorf("readlink good: %q %v", target, err)
	}
}
