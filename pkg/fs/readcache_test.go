package fs

import (
	"bytes"
	"container/list"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cosmount/cosmount/pkg/fs/memstore"
)

// cacheFile is an object of a few blocks and a short tail, so that the last
// block of the cache's grid is not full.
func cacheFile(t *testing.T, store *memstore.Store, key string, size int64, seed byte) []byte {
	t.Helper()
	data := make([]byte, size)
	fill(rand.NewChaCha8([32]byte{seed}), data)
	putObject(t, store, key, string(data), nil)
	return data
}

func readAndCheck(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := readFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %s: %d bytes, wrong data (want %d bytes)", path, len(got), len(want))
	}
}

// dropPageCache makes the next read of path reach the server: the kernel
// keeps a file's pages while its ETag is unchanged (OpenKeepCache).
func dropPageCache(t *testing.T, path string) {
	t.Helper()
	f, err := openRaw(path, syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(f.fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

func TestReadCacheServesASecondRead(t *testing.T) {
	const size = 3*MiB + 12345
	for _, tc := range []struct {
		name string
		set  func(o *Options, dir string)
	}{
		{"memory", func(o *Options, _ string) { o.CacheMemory = 16 * MiB }},
		{"disk", func(o *Options, dir string) { o.CacheSize, o.CacheDir = 16*MiB, dir }},
		// Memory too small for the file: blocks move on to the disk.
		{"memory and disk", func(o *Options, dir string) { o.CacheMemory, o.CacheSize, o.CacheDir = MiB, 16*MiB, dir }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := memstore.New()
			data := cacheFile(t, store, "f", size, 1)
			opts := testOptions()
			dir := t.TempDir()
			tc.set(&opts, dir)
			m, mnt := mountT(t, store, opts)
			path := filepath.Join(mnt, "f")
			readAndCheck(t, path, data)
			waitFor(t, "the blocks to reach the cache", func() bool {
				st := m.FS().CacheStats()
				return st.MemoryBytes+st.DiskBytes == size
			})
			store.ResetCounts()
			dropPageCache(t, path)
			readAndCheck(t, path, data)
			if gets := store.Count(memstore.OpGet); gets != 0 {
				t.Errorf("second read cost %d GETs, want 0 (%+v)", gets, m.FS().CacheStats())
			}
			if st := m.FS().CacheStats(); st.Hits == 0 {
				t.Errorf("no cache hits: %+v", st)
			}
		})
	}
}

// A file looked up again after EntryTTL (the next epoch of a job) costs a
// HEAD to check its version, not a GET: the cache holds its data.
func TestReadCacheLookupAgainIsAHEAD(t *testing.T) {
	const ttl = 300 * time.Millisecond
	store := memstore.New()
	small := cacheFile(t, store, "small", 1000, 1)
	large := cacheFile(t, store, "large", 2*MiB+1, 2)
	opts := testOptions()
	opts.AttrTTL, opts.EntryTTL, opts.NegativeTTL = ttl, ttl, ttl
	opts.CacheMemory = 16 * MiB
	m, mnt := mountT(t, store, opts)
	readAndCheck(t, filepath.Join(mnt, "small"), small)
	readAndCheck(t, filepath.Join(mnt, "large"), large)
	waitFor(t, "the blocks to reach the cache", func() bool {
		return m.FS().CacheStats().MemoryBytes == int64(len(small)+len(large))
	})
	time.Sleep(ttl + ttl/2)
	store.ResetCounts()
	dropPageCache(t, filepath.Join(mnt, "small"))
	dropPageCache(t, filepath.Join(mnt, "large"))
	time.Sleep(ttl + ttl/2) // the opens above looked the names up again
	store.ResetCounts()
	readAndCheck(t, filepath.Join(mnt, "small"), small)
	readAndCheck(t, filepath.Join(mnt, "large"), large)
	// A HEAD per lookup, and one more where the attributes expired again
	// before the read (a slow machine): no GET.
	if gets, heads := store.Count(memstore.OpGet), store.Count(memstore.OpHead); gets != 0 || heads < 2 || heads > 4 {
		t.Errorf("second epoch cost %v, want a HEAD (or two) per file and no GET", store.Counts())
	}
}

// A changed object is not served from the cache once the attributes are
// older than AttrTTL: the cache is keyed by ETag.
func TestReadCacheFollowsTheETag(t *testing.T) {
	const ttl = 300 * time.Millisecond
	store := memstore.New()
	one := cacheFile(t, store, "f", 2*MiB+7, 1)
	opts := testOptions()
	opts.AttrTTL, opts.EntryTTL = ttl, ttl
	opts.CacheMemory = 16 * MiB
	m, mnt := mountT(t, store, opts)
	path := filepath.Join(mnt, "f")
	readAndCheck(t, path, one)
	waitFor(t, "the blocks to reach the cache", func() bool { return m.FS().CacheStats().MemoryBytes == int64(len(one)) })
	two := cacheFile(t, store, "f", 2*MiB+7, 2) // same size, other bytes
	time.Sleep(ttl + ttl/2)
	readAndCheck(t, path, two)
	// The old version's blocks stay until evicted, but are not found.
	store.ResetCounts()
	dropPageCache(t, path)
	readAndCheck(t, path, two)
	if gets := store.Count(memstore.OpGet); gets != 0 {
		t.Errorf("third read cost %d GETs: the new version was not cached", gets)
	}
}

// The disk tier stays within cache_size, evicting the least recently used
// blocks, and each server's directory goes with it.
func TestReadCacheDiskEviction(t *testing.T) {
	store := memstore.New()
	a := cacheFile(t, store, "a", 6*MiB, 1)
	b := cacheFile(t, store, "b", 6*MiB, 2)
	dir := t.TempDir()
	opts := testOptions()
	opts.CacheSize, opts.CacheDir = 8*MiB, dir
	m, mnt := mountT(t, store, opts)
	readAndCheck(t, filepath.Join(mnt, "a"), a)
	readAndCheck(t, filepath.Join(mnt, "b"), b)
	sub, err := filepath.Glob(filepath.Join(dir, cacheDirPrefix+"*"))
	if err != nil || len(sub) != 1 {
		t.Fatalf("cache directories %v, %v; want one", sub, err)
	}
	_, infoB := object(t, store, "b")
	waitFor(t, "the disk cache to settle at 8 blocks", func() bool {
		c := m.FS().cache
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending) == 0 && c.diskUsed == 8*MiB && c.disk[blockKey{"b", infoB.ETag, 5}] != nil
	})
	// One sparse file per object version; evicted blocks are holes (once
	// written back, a file's allocation is what it holds).
	syscall.Sync()
	files, _ := filepath.Glob(filepath.Join(sub[0], "[0-9a-f]*"))
	var allocated int64
	for _, f := range files {
		var st syscall.Stat_t
		if err := syscall.Stat(f, &st); err != nil {
			t.Fatal(err)
		}
		allocated += st.Blocks * 512
	}
	if len(files) != 2 || allocated > 8*MiB+64*KiB {
		t.Errorf("%d files holding %d KiB on disk, want 2 holding 8 MiB", len(files), allocated/KiB)
	}
	// b is the most recent: its blocks are all there, a lost 4 of its 6.
	store.ResetCounts()
	dropPageCache(t, filepath.Join(mnt, "b"))
	readAndCheck(t, filepath.Join(mnt, "b"), b)
	if gets := store.Count(memstore.OpGet); gets != 0 {
		t.Errorf("re-reading the most recent file cost %d GETs", gets)
	}
	store.ResetCounts()
	dropPageCache(t, filepath.Join(mnt, "a"))
	readAndCheck(t, filepath.Join(mnt, "a"), a)
	if gets := store.Count(memstore.OpGet); gets == 0 {
		t.Error("re-reading the evicted file cost no GET")
	}
	unmountT(t, m)
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("cache directory not removed at unmount: %v", left)
	}
}

// A server that died left its directory behind: the next one under the same
// cache_dir removes it, but not the directory of a server still running.
func TestReadCacheRemovesDirectoriesOfDeadServers(t *testing.T) {
	base := t.TempDir()
	stale := filepath.Join(base, cacheDirPrefix+"dead")
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"lock", "0123abcd"} {
		if err := os.WriteFile(filepath.Join(stale, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	unrelated := filepath.Join(base, "not-ours")
	if err := os.Mkdir(unrelated, 0o700); err != nil {
		t.Fatal(err)
	}
	opts := testOptions()
	opts.TempDir = t.TempDir()
	opts.CacheSize, opts.CacheDir = 8*MiB, base
	live, err := New(memstore.New(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer live.stop()
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale cache directory still there: %v", err)
	}
	if _, err := os.Stat(unrelated); err != nil {
		t.Errorf("a directory that is not a cache was touched: %v", err)
	}
	second, err := New(memstore.New(), opts)
	if err != nil {
		t.Fatal(err)
	}
	second.stop()
	if _, err := os.Stat(live.cache.dir); err != nil {
		t.Errorf("the running server's cache directory was removed: %v", err)
	}
}

func TestReadCacheOptions(t *testing.T) {
	for _, tc := range []struct {
		set  func(o *Options)
		want string
	}{
		{func(o *Options) { o.CacheSize = GiB }, "cache_size"},
		{func(o *Options) { o.CacheSize, o.CacheDir = GiB, "/does/not/exist" }, "cache_dir"},
		{func(o *Options) { o.CacheMemory = 4096 }, "cache_memory"},
	} {
		o := testOptions()
		tc.set(&o)
		if _, err := New(memstore.New(), o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New with %+v: %v, want an error naming %s", o.Options, err, tc.want)
		}
	}
}

// Eight readers of eight files at once stay within the budget, share it,
// and still read in chunks of at least a block (not 128 KiB GETs).
func TestManyReadersShareTheBudget(t *testing.T) {
	const readers, size = 8, 24 * MiB
	for _, tc := range []struct {
		name  string
		limit int64
	}{
		{"roomy", 256 * MiB},
		{"tight", 48 * MiB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := memstore.New()
			files := make([][]byte, readers)
			for i := range files {
				files[i] = cacheFile(t, store, string(rune('a'+i)), size, byte(i))
			}
			opts := raOptions()
			opts.PartSize = 8 * MiB
			opts.MemoryLimit = tc.limit
			m, mnt := mountT(t, store, opts)
			store.ResetCounts()
			var wg sync.WaitGroup
			for i := range files {
				wg.Add(1)
				go func() {
					defer wg.Done()
					readAndCheck(t, filepath.Join(mnt, string(rune('a'+i))), files[i])
				}()
			}
			wg.Wait()
			if _, high := m.FS().MemoryStats(); high > tc.limit {
				t.Errorf("high-water %d MiB above memory_limit %d MiB", high/MiB, tc.limit/MiB)
			}
			// Chunks shrink to a block when the budget is tight, and a few
			// reads that find no budget at the start of a stream read on
			// their own; GETs of 128 KiB throughout would be 192 per file.
			if gets := store.Count(memstore.OpGet); gets > readers*(size/MiB+1)*3/2 {
				t.Errorf("%d GETs for %d files of %d MiB", gets, readers, size/MiB)
			}
			if tc.limit == 256*MiB {
				// Every stream gets chunks of its share of the budget: one
				// GET per chunk, and the lookup's.
				m.FS().streams.Store(readers)
				unit, _ := (&readahead{fs: m.FS()}).limits()
				m.FS().streams.Store(0)
				if gets := store.Count(memstore.OpGet); gets > readers*((size+unit-1)/unit+1) {
					t.Errorf("%d GETs for %d files of %d MiB in chunks of %d MiB", gets, readers, size/MiB, unit/MiB)
				}
			}
		})
	}
}

// A block that finds the disk writer's queue full is written by the reader
// that passed it, not dropped.
func TestReadCacheWritesWhenTheQueueIsFull(t *testing.T) {
	opts := testOptions()
	opts.TempDir = t.TempDir()
	fsys, err := New(memstore.New(), opts)
	if err != nil {
		t.Fatal(err)
	}
	// A disk tier whose writer never takes anything: every block finds
	// the queue full.
	c := &blockCache{
		fs: fsys, diskMax: 8 * MiB, dir: t.TempDir(),
		mem: map[blockKey]*list.Element{}, memLRU: list.New(),
		pending: map[blockKey][]byte{}, disk: map[blockKey]*list.Element{}, diskLRU: list.New(),
		files: map[version]*versionFile{}, latest: map[string]string{}, openLRU: list.New(),
		writes: make(chan diskWrite), done: make(chan struct{}),
	}
	close(c.done)
	defer c.close()
	data := bytes.Repeat([]byte("x"), int(MiB))
	c.put("k", "e1", 3, data)
	if st := c.stats(); st.SyncWrites != 1 || !c.has("k", "e1", 3) {
		t.Fatalf("block not cached with the queue full: %+v", st)
	}
	got := make([]byte, 100)
	if n := c.read("k", "e1", 3*MiB+5, got); n != 100 || !bytes.Equal(got, data[:100]) {
		t.Errorf("read %d bytes of the block back", n)
	}
}
