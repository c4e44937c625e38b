package fs

import (
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// The read cache keeps data read once for the reads that come again (the
// epochs of a training job, a data set read by several jobs on one node):
// blocks of blockSize (the last block of an object may be shorter), keyed by
// object key, ETag and block index, in memory (CacheMemory bytes) and on a
// node-local disk (CacheSize bytes under CacheDir). Both tiers are LRU and
// bounded; a block evicted from memory moves to disk when there is one.
//
// Consistency: a block is found only under the ETag it was read with, and a
// read asks for the ETag of the file's current attributes. Those are
// revalidated (HEAD) once older than AttrTTL, also while a descriptor stays
// open (fileHandle.Read), so a changed object is never served from the
// cache more than AttrTTL after this mount could have seen the change. The
// cache lives as long as the server: a new server starts empty.
//
// Blocks come from the readahead: a block it has passed (or drops) and that
// covers a whole grid block of the object goes to the cache instead of back
// to the pool, so caching costs no copy. Disk writes run on one goroutine
// behind a short queue; a block that finds the queue full is not cached
// rather than slowing the reader down.
type blockCache struct {
	fs      *FS
	memMax  int64
	diskMax int64
	dir     string   // this server's directory under CacheDir; "" without a disk tier
	lock    *os.File // holds an flock on dir while the server runs

	mu       sync.Mutex
	mem      map[blockKey]*list.Element // guarded by mu: *memBlock
	memLRU   *list.List                 // guarded by mu, most recent first
	memUsed  int64                      // guarded by mu
	pending  map[blockKey][]byte        // guarded by mu: queued for disk, still readable
	disk     map[blockKey]*list.Element // guarded by mu: *diskBlock
	diskLRU  *list.List                 // guarded by mu
	diskUsed int64                      // guarded by mu
	openLRU  *list.List                 // guarded by mu: *diskBlock with an open file, most recent first
	closed   bool                       // guarded by mu

	writes chan diskWrite
	done   chan struct{} // closed when the writer has stopped

	hits, misses, dropped int64 // guarded by mu: blocks served, not found, not cached (queue full)
}

type blockKey struct {
	key, etag string
	idx       int64
}

type memBlock struct {
	k    blockKey
	data []byte
}

type diskBlock struct {
	k    blockKey
	size int64
	// open is the block's file, kept open for the reads that follow (a
	// block is read in 128 KiB pieces); at most maxOpen are. refs counts
	// the reads using it: a file in use is closed by its last read.
	open     *os.File
	openElem *list.Element // in openLRU while open
	refs     int
	evicted  bool
}

type diskWrite struct {
	k    blockKey
	data []byte
}

// diskQueue is how many blocks may wait for the disk writer.
const diskQueue = 16

// maxOpen is how many block files the cache keeps open for reads.
const maxOpen = 64

// cacheDirPrefix names the per-server directories under CacheDir.
const cacheDirPrefix = "cosmount-cache-"

func newBlockCache(f *FS) (*blockCache, error) {
	o := f.opts
	if o.CacheMemory == 0 && o.CacheSize == 0 {
		return nil, nil
	}
	c := &blockCache{
		fs: f, memMax: o.CacheMemory, diskMax: o.CacheSize,
		mem: map[blockKey]*list.Element{}, memLRU: list.New(),
		pending: map[blockKey][]byte{}, disk: map[blockKey]*list.Element{}, diskLRU: list.New(),
		openLRU: list.New(), done: make(chan struct{}),
	}
	if o.CacheSize > 0 {
		dir, lock, err := makeCacheDir(o.CacheDir, f.log)
		if err != nil {
			return nil, err
		}
		c.dir, c.lock = dir, lock
		c.writes = make(chan diskWrite, diskQueue)
		go c.writer()
	} else {
		close(c.done)
	}
	return c, nil
}

// makeCacheDir creates this server's directory under base and locks it.
// Directories of servers that are gone (their lock is free) are removed:
// a crashed server leaves its blocks behind, and nothing else would.
func makeCacheDir(base string, log klog.Logger) (string, *os.File, error) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return "", nil, fmt.Errorf("cache_dir: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), cacheDirPrefix) {
			continue
		}
		old := filepath.Join(base, e.Name())
		lf, err := os.Open(filepath.Join(old, "lock"))
		if err != nil {
			continue // being created, or not ours
		}
		if syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			log.Info("removing the read cache of a server that is gone", "dir", old)
			_ = os.RemoveAll(old)
		}
		lf.Close()
	}
	dir, err := os.MkdirTemp(base, cacheDirPrefix)
	if err != nil {
		return "", nil, fmt.Errorf("cache_dir: %w", err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err == nil {
		err = syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	if err != nil {
		if lf != nil {
			lf.Close()
		}
		_ = os.RemoveAll(dir)
		return "", nil, fmt.Errorf("cache_dir: lock: %w", err)
	}
	return dir, lf, nil
}

// enabled reports whether the cache exists (a nil cache is off).
func (c *blockCache) enabled() bool { return c != nil }

// cacheable reports whether [start, end) of an object of size bytes is a
// whole block of the cache's grid.
func cacheable(start, end, size int64) bool {
	return start%blockSize == 0 && (end-start == blockSize || end == size)
}

// put takes over data, the whole block idx of (key, etag), whose budget the
// caller has already given back. It keeps the block in memory, or queues it
// for the disk, or lets it go.
func (c *blockCache) put(key, etag string, idx int64, data []byte) {
	k := blockKey{key, etag, idx}
	n := int64(len(data))
	c.mu.Lock()
	if c.closed || c.mem[k] != nil || c.pending[k] != nil || c.disk[k] != nil {
		c.mu.Unlock()
		c.recycle(data)
		return
	}
	if c.memMax >= n {
		var out []memBlock
		for c.memUsed+n > c.memMax {
			e := c.memLRU.Back()
			b := e.Value.(*memBlock)
			c.memLRU.Remove(e)
			delete(c.mem, b.k)
			c.memUsed -= int64(len(b.data))
			out = append(out, *b)
		}
		c.mem[k] = c.memLRU.PushFront(&memBlock{k: k, data: data})
		c.memUsed += n
		c.mu.Unlock()
		for _, b := range out {
			c.toDisk(b.k, b.data)
		}
		return
	}
	c.mu.Unlock()
	c.toDisk(k, data)
}

// toDisk queues a block for the disk tier, if there is one and it has room
// in its queue; otherwise the block is not cached.
func (c *blockCache) toDisk(k blockKey, data []byte) {
	if c.diskMax < int64(len(data)) {
		c.recycle(data)
		return
	}
	c.mu.Lock()
	if c.closed || c.disk[k] != nil || c.pending[k] != nil {
		c.mu.Unlock()
		c.recycle(data)
		return
	}
	select {
	case c.writes <- diskWrite{k, data}:
		c.pending[k] = data
		c.mu.Unlock()
	default:
		c.dropped++
		c.mu.Unlock()
		c.recycle(data)
	}
}

// recycle gives a block buffer that leaves the cache back to the pool if the
// budget has room for it (a pooled buffer is already faulted in).
func (c *blockCache) recycle(data []byte) {
	if int64(len(data)) == blockSize && c.fs.mem.tryAcquire(blockSize, c.fs.reserve()) {
		c.fs.bufs.put(data)
	}
}

// writer writes queued blocks to disk, one file per block, evicting the
// least recently used blocks to stay within diskMax.
func (c *blockCache) writer() {
	defer close(c.done)
	for w := range c.writes {
		path := c.path(w.k)
		err := os.WriteFile(path, w.data, 0o600)
		c.mu.Lock()
		delete(c.pending, w.k)
		if err != nil || c.closed {
			c.mu.Unlock()
			if err != nil {
				c.fs.log.Error(err, "read cache: writing a block failed", "dir", c.dir)
			}
			_ = os.Remove(path)
			c.recycle(w.data)
			continue
		}
		n := int64(len(w.data))
		var evicted []*diskBlock
		for c.diskUsed+n > c.diskMax && c.diskLRU.Len() > 0 {
			evicted = append(evicted, c.evictDiskLocked(c.diskLRU.Back()))
		}
		c.disk[w.k] = c.diskLRU.PushFront(&diskBlock{k: w.k, size: n})
		c.diskUsed += n
		c.mu.Unlock()
		c.recycle(w.data)
		for _, b := range evicted {
			_ = os.Remove(c.path(b.k))
		}
	}
}

// evictDiskLocked removes a disk block from the index; the caller removes
// its file. Requires mu.
func (c *blockCache) evictDiskLocked(e *list.Element) *diskBlock {
	b := e.Value.(*diskBlock)
	c.diskLRU.Remove(e)
	delete(c.disk, b.k)
	c.diskUsed -= b.size
	b.evicted = true
	c.closeFileLocked(b)
	return b
}

// closeFileLocked closes a block's file unless a read is using it (the
// last read closes it then). Requires mu.
func (c *blockCache) closeFileLocked(b *diskBlock) {
	if b.refs > 0 || b.open == nil {
		return
	}
	b.open.Close()
	b.open = nil
	c.openLRU.Remove(b.openElem)
	b.openElem = nil
}

// openFileLocked opens a block's file for reads, closing the least recently
// used idle file beyond maxOpen. Requires mu.
func (c *blockCache) openFileLocked(b *diskBlock) error {
	if b.open != nil {
		c.openLRU.MoveToFront(b.openElem)
		return nil
	}
	f, err := os.Open(c.path(b.k))
	if err != nil {
		return err
	}
	b.open = f
	b.openElem = c.openLRU.PushFront(b)
	for e := c.openLRU.Back(); c.openLRU.Len() > maxOpen && e != nil; {
		prev := e.Prev()
		c.closeFileLocked(e.Value.(*diskBlock))
		e = prev
	}
	return nil
}

// path is where a block lives on disk: a hash, so that keys of any length
// and characters make valid names.
func (c *blockCache) path(k blockKey) string {
	h := sha256.New()
	io.WriteString(h, k.key)
	h.Write([]byte{0})
	io.WriteString(h, k.etag)
	h.Write([]byte{0})
	io.WriteString(h, strconv.FormatInt(k.idx, 10))
	return filepath.Join(c.dir, hex.EncodeToString(h.Sum(nil)[:16]))
}

// has reports whether block idx of (key, etag) is cached.
func (c *blockCache) has(key, etag string, idx int64) bool {
	k := blockKey{key, etag, idx}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mem[k] != nil || c.pending[k] != nil || c.disk[k] != nil
}

// read copies cached bytes of (key, etag) from off on into dst, within the
// block holding off, and returns how many (0 on a miss).
func (c *blockCache) read(key, etag string, off int64, dst []byte) int {
	k := blockKey{key, etag, off / blockSize}
	in := off % blockSize
	c.mu.Lock()
	if e, ok := c.mem[k]; ok {
		defer c.mu.Unlock()
		c.memLRU.MoveToFront(e)
		data := e.Value.(*memBlock).data
		if in >= int64(len(data)) {
			return 0
		}
		c.hits++
		return copy(dst, data[in:])
	}
	if data, ok := c.pending[k]; ok {
		defer c.mu.Unlock()
		if in >= int64(len(data)) {
			return 0
		}
		c.hits++
		return copy(dst, data[in:])
	}
	e, ok := c.disk[k]
	if !ok {
		c.misses++
		c.mu.Unlock()
		return 0
	}
	c.diskLRU.MoveToFront(e)
	b := e.Value.(*diskBlock)
	if in >= b.size {
		c.mu.Unlock()
		return 0
	}
	opened := b.open == nil
	if err := c.openFileLocked(b); err != nil {
		c.evictDiskLocked(e)
		c.mu.Unlock()
		c.fs.log.Error(err, "read cache: a block is gone", "dir", c.dir)
		return 0
	}
	if opened {
		c.readAheadLocked(k)
	}
	b.refs++
	file := b.open
	c.hits++
	c.mu.Unlock()
	n, err := file.ReadAt(dst[:min(int64(len(dst)), b.size-in)], in)
	c.mu.Lock()
	b.refs--
	if b.evicted || c.closed || c.openLRU.Len() > maxOpen {
		c.closeFileLocked(b)
	}
	c.mu.Unlock()
	if err != nil && !errors.Is(err, io.EOF) {
		c.fs.log.Error(err, "read cache: reading a block failed", "dir", c.dir)
		return 0
	}
	return n
}

// diskReadAhead is how many blocks after one that a read starts on are
// brought in from disk in the background.
const diskReadAhead = 2

// readAheadLocked asks the kernel to read the files of the blocks after k
// into its page cache: the kernel's own readahead stops at the end of a
// block's file, so without this every block would start with a wait for
// the disk. Requires mu.
func (c *blockCache) readAheadLocked(k blockKey) {
	for j := int64(1); j <= diskReadAhead; j++ {
		next := blockKey{k.key, k.etag, k.idx + j}
		e, ok := c.disk[next]
		if !ok {
			return
		}
		b := e.Value.(*diskBlock)
		if b.open != nil {
			continue // opened before: read ahead then
		}
		if c.openFileLocked(b) != nil {
			return
		}
		_ = unix.Fadvise(int(b.open.Fd()), 0, 0, unix.FADV_WILLNEED)
	}
}

// CacheStats are the read cache's counters and sizes.
type CacheStats struct {
	MemoryBytes, DiskBytes int64 // held now
	Hits, Misses           int64 // block lookups by reads
	Dropped                int64 // blocks not cached because the disk queue was full
}

// stats reports the counters (zero for a nil cache).
func (c *blockCache) stats() CacheStats {
	if c == nil {
		return CacheStats{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{MemoryBytes: c.memUsed, DiskBytes: c.diskUsed, Hits: c.hits, Misses: c.misses, Dropped: c.dropped}
}

// close empties the cache and removes its directory; the server is done.
func (c *blockCache) close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	for _, e := range c.disk {
		c.closeFileLocked(e.Value.(*diskBlock))
	}
	c.mem, c.memLRU, c.memUsed = map[blockKey]*list.Element{}, list.New(), 0
	c.mu.Unlock()
	if c.writes != nil {
		close(c.writes)
	}
	<-c.done
	if c.dir != "" {
		if err := os.RemoveAll(c.dir); err != nil {
			c.fs.log.Error(err, "read cache: removing the directory failed", "dir", c.dir)
		}
		c.lock.Close()
	}
}
