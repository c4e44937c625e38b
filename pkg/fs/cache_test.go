package fs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/fs/memstore"
)

func TestLsLongCostsOnlyListCalls(t *testing.T) {
	const n = 5000
	store := memstore.New()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		body := fmt.Sprintf("object %d", i)
		if _, err := store.Put(ctx, fmt.Sprintf("f%05d", i), strings.NewReader(body), int64(len(body)), cos.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	_, mnt := mountT(t, store, testOptions())
	store.ResetCounts()

	out := shell(t, mnt, "ls -l")
	if lines := strings.Count(out, "\n"); lines != n+1 { // plus "total"
		t.Fatalf("ls -l printed %d lines", lines)
	}
	if !strings.Contains(out, " 10 ") { // "object 1234" is 11 bytes, "object 1" 8: sizes come from the listing
		t.Errorf("sizes missing from ls -l output")
	}
	counts := store.Counts()
	if counts[memstore.OpList] != n/1000 || len(counts) != 1 {
		t.Errorf("ls -l of %d objects cost %v, want only %d List calls", n, counts, n/1000)
	}
	// A second ls -l within EntryTTL costs nothing at all.
	store.ResetCounts()
	shell(t, mnt, "ls -l >/dev/null")
	if counts := store.Counts(); len(counts) != 0 {
		t.Errorf("cached ls -l cost %v", counts)
	}
}

func TestNegativeCache(t *testing.T) {
	store := memstore.New()
	_, mnt := mountT(t, store, testOptions())
	store.ResetCounts()
	missing := filepath.Join(mnt, "missing")
	for i := 0; i < 10; i++ {
		if _, err := os.Stat(missing); !os.IsNotExist(err) {
			t.Fatalf("stat %d: %v", i, err)
		}
	}
	// The first miss is probed (GET + LIST name/) and lists the directory
	// once, so that further misses in it (cp -r) cost no request either.
	if g, l := store.Count(memstore.OpGet), store.Count(memstore.OpList); g != 1 || l != 2 || store.Count(memstore.OpHead) != 0 {
		t.Errorf("10 lookups of a missing name cost %v, want 1 GET and 2 LIST", store.Counts())
	}
	// Creating the name clears the negative entry.
	if err := writeFile(missing, []byte("now here")); err != nil {
		t.Fatal(err)
	}
	if b, err := readFile(missing); err != nil || string(b) != "now here" {
		t.Fatalf("after create: %q %v", b, err)
	}
	if err := os.Mkdir(filepath.Join(mnt, "d"), 0o755); err == nil {
		if _, err := os.Stat(filepath.Join(mnt, "d")); err != nil {
			t.Errorf("mkdir then stat: %v", err)
		}
	}
}

func TestNegativeCacheDisabled(t *testing.T) {
	store := memstore.New()
	opts := testOptions()
	opts.NegativeTTL = 0
	_, mnt := mountT(t, store, opts)
	store.ResetCounts()
	for i := 0; i < 3; i++ {
		_, err := os.Stat(filepath.Join(mnt, "missing"))
		wantErrno(t, "stat", err, syscall.ENOENT)
	}
	if g := store.Count(memstore.OpGet); g != 3 {
		t.Errorf("without a negative cache 3 lookups cost %d probes (GETs)", g)
	}
	// Another writer creates the object: visible at once.
	putObject(t, store, "missing", "x", nil)
	if _, err := os.Stat(filepath.Join(mnt, "missing")); err != nil {
		t.Errorf("object created behind the mount: %v", err)
	}
}

func TestLookupAfterListingNeedsNoHead(t *testing.T) {
	store := memstore.New()
	putObject(t, store, "dir/a", "aaa", nil)
	putObject(t, store, "dir/b", "bb", nil)
	_, mnt := mountT(t, store, testOptions())
	if _, err := os.ReadDir(filepath.Join(mnt, "dir")); err != nil {
		t.Fatal(err)
	}
	store.ResetCounts()
	for name, size := range map[string]int64{"a": 3, "b": 2} {
		fi, err := os.Stat(filepath.Join(mnt, "dir", name))
		if err != nil || fi.Size() != size {
			t.Errorf("stat %s: %v %v", name, fi, err)
		}
	}
	_, err := os.Stat(filepath.Join(mnt, "dir", "nope"))
	wantErrno(t, "stat missing after listing", err, syscall.ENOENT)
	if counts := store.Counts(); len(counts) != 0 {
		t.Errorf("lookups after a listing cost %v", counts)
	}
}
