package fs

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/fs/memstore"
)

func TestPrefixCache(t *testing.T) {
	mem := newBudget(64 * MiB)
	now := time.Unix(1e9, 0)
	clock := func() time.Time { return now }
	c := newPrefixCache(mem, 0, 10, time.Minute, clock)
	c.put("a", "e1", []byte("aaaa"))
	c.put("b", "e1", []byte("bbbb"))
	dst := make([]byte, 8)
	if n := c.read("a", "e1", 1, dst); n != 3 || string(dst[:n]) != "aaa" {
		t.Errorf("read a@1 = %q", dst[:n])
	}
	if n := c.read("a", "e2", 0, dst); n != 0 {
		t.Error("served another version of a")
	}
	if n := c.read("a", "e1", 4, dst); n != 0 {
		t.Error("served bytes beyond the prefix")
	}
	// Over the bound the least recently used entry goes: b (a was read).
	c.put("c", "e1", []byte("cccc"))
	if c.end("b", "e1") != 0 || c.end("a", "e1") != 4 || c.end("c", "e1") != 4 {
		t.Errorf("after eviction: a %d, b %d, c %d", c.end("a", "e1"), c.end("b", "e1"), c.end("c", "e1"))
	}
	if used, _ := mem.stats(); used != 8 || c.bytes() != 8 {
		t.Errorf("budget %d, cache %d, want 8", used, c.bytes())
	}
	// A new version replaces the old one.
	c.put("a", "e2", []byte("AA"))
	if c.end("a", "e1") != 0 || c.end("a", "e2") != 2 {
		t.Error("new version did not replace the old one")
	}
	c.put("big", "e1", make([]byte, 11)) // larger than the cache: not kept
	if c.end("big", "e1") != 0 {
		t.Error("kept an entry larger than the cache")
	}
	c.clear()
	if used, _ := mem.stats(); used != 0 || c.bytes() != 0 {
		t.Errorf("after clear: budget %d, cache %d", used, c.bytes())
	}
	// The budget's reserve is respected.
	tight := newBudget(10)
	c = newPrefixCache(tight, 8, 10, time.Minute, clock)
	c.put("a", "e1", []byte("aaa"))
	if c.end("a", "e1") != 0 {
		t.Error("kept an entry the budget could not hold")
	}
	// Entries are served for the TTL only, like the attributes.
	c = newPrefixCache(mem, 0, 10, time.Minute, clock)
	c.put("a", "e1", []byte("aaa"))
	now = now.Add(time.Minute)
	if n := c.read("a", "e1", 0, dst); n != 0 || c.end("a", "e1") != 0 {
		t.Error("served an entry older than the TTL")
	}
	c.clear()
	c = newPrefixCache(mem, 0, 10, 0, clock)
	if c.put("a", "e1", []byte("aaa")); c.bytes() != 0 {
		t.Error("kept an entry with a TTL of 0")
	}
}

// A cold read by name costs one request per file: the lookup's GET brings
// the attributes and the first lookupPrefix bytes, the read is served from
// them; a larger file reads on from there.
func TestLookupGETServesTheRead(t *testing.T) {
	store := memstore.New()
	small := "small file"
	large := strings.Repeat("0123456789", int(lookupPrefix/10)+1000) // just over the prefix
	putObject(t, store, "d/small", small, map[string]string{"mode": "33216", "uid": "7"})
	putObject(t, store, "d/large", large, nil)
	putObject(t, store, "d/empty", "", nil)
	putObject(t, store, "d/other", "x", nil)
	_, mnt := mountT(t, store, testOptions())
	if _, err := readFile(filepath.Join(mnt, "d", "other")); err != nil { // lists d
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, body string
		want       map[memstore.Op]int64
	}{
		{"small", small, map[memstore.Op]int64{memstore.OpGet: 1}},
		// The lookup's prefix, then one GET from there to the end.
		{"large", large, map[memstore.Op]int64{memstore.OpGet: 2}},
		// An empty object refuses a range: it is HEADed instead.
		{"empty", "", map[memstore.Op]int64{memstore.OpGet: 1, memstore.OpHead: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store.ResetCounts()
			b, err := readFile(filepath.Join(mnt, "d", tc.name))
			if err != nil || string(b) != tc.body {
				t.Fatalf("read %d bytes, %v; want %d", len(b), err, len(tc.body))
			}
			wantCounts(t, store, tc.want)
		})
	}
	// The GET's metadata made the attributes: mode and owner from s3fs.
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(mnt, "d", "small"), &st); err != nil || st.Mode&0o777 != 0o700 || st.Uid != 7 {
		t.Errorf("stat small: mode %o uid %d, %v", st.Mode, st.Uid, err)
	}
}

// What a lookup fetched is only served for the version it came from.
func TestLookupPrefixIsPerVersion(t *testing.T) {
	store := memstore.New()
	putObject(t, store, "f", "version one", nil)
	const ttl = 2 * time.Second
	opts := testOptions()
	opts.AttrTTL, opts.EntryTTL = ttl, ttl
	m, mnt := mountT(t, store, opts)
	if b, err := readFile(filepath.Join(mnt, "f")); err != nil || string(b) != "version one" {
		t.Fatalf("first read %q %v", b, err)
	}
	putObject(t, store, "f", "version two!", nil)
	time.Sleep(ttl + ttl/4) // the lookup, its attributes and its prefix expire
	if b, err := readFile(filepath.Join(mnt, "f")); err != nil || string(b) != "version two!" {
		t.Fatalf("after the change: %q %v", b, err)
	}
	// Direct: the prefix of the old version is not served for the new one.
	_, info := object(t, store, "f")
	dst := make([]byte, 64)
	if n := m.FS().prefixes.read("f", info.ETag+"x", 0, dst); n != 0 {
		t.Errorf("served %q for another ETag", dst[:n])
	}
	if n := m.FS().prefixes.read("f", info.ETag, 0, dst); !bytes.Equal(dst[:n], []byte("version two!")) {
		t.Errorf("prefix of the current version %q", dst[:n])
	}
}

// In a directory larger than a lookup's listing, the names the listing
// showed cost one request each; only the others are probed (GET + LIST).
func TestLookupInALargeDirectory(t *testing.T) {
	const n = 2500 // more than lookupPages pages of 1000
	store := memstore.New()
	for i := 0; i < n; i++ {
		putObject(t, store, fmt.Sprintf("d/f%04d", i), "x", nil)
	}
	_, mnt := mountT(t, store, testOptions())
	readAndCheck(t, filepath.Join(mnt, "d", "f0000"), []byte("x")) // probes, then lists d
	store.ResetCounts()
	for i := 1; i <= 100; i++ {
		readAndCheck(t, filepath.Join(mnt, "d", fmt.Sprintf("f%04d", i)), []byte("x"))
	}
	wantCounts(t, store, map[memstore.Op]int64{memstore.OpGet: 100})
	store.ResetCounts()
	for i := n - 10; i < n; i++ {
		readAndCheck(t, filepath.Join(mnt, "d", fmt.Sprintf("f%04d", i)), []byte("x"))
	}
	wantCounts(t, store, map[memstore.Op]int64{memstore.OpGet: 10, memstore.OpList: 10})
}

// Names of a directory that readdir listed are looked up after the listing
// expired (an ls -l slower than EntryTTL): the directory is listed again,
// not asked about name by name.
func TestLookupAfterTheListingExpired(t *testing.T) {
	const n, ttl = 300, 300 * time.Millisecond
	store := memstore.New()
	for i := 0; i < n; i++ {
		putObject(t, store, fmt.Sprintf("d/f%04d", i), "x", nil)
	}
	opts := testOptions()
	opts.EntryTTL, opts.AttrTTL, opts.NegativeTTL = ttl, ttl, ttl
	_, mnt := mountT(t, store, opts)
	shell(t, mnt, "ls d >/dev/null")
	time.Sleep(ttl + ttl/2)
	store.ResetCounts()
	start := time.Now()
	for i := 0; i < n; i++ {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(mnt, "d", fmt.Sprintf("f%04d", i)), &st); err != nil || st.Size != 1 {
			t.Fatalf("stat f%04d: size %d, %v", i, st.Size, err)
		}
	}
	// Per EntryTTL the stats took: a listing of d, and the lookup of d
	// itself (the root listed again, d's marker HEADed); nothing per name.
	periods := int64(time.Since(start)/ttl) + 1
	got := store.Counts()
	if got[memstore.OpGet] != 0 || got[memstore.OpHead] > periods || got[memstore.OpList] > 2*periods {
		t.Errorf("%d stats after the listing expired cost %v, want at most %d LISTs and %d HEADs", n, got, 2*periods, periods)
	}
}
