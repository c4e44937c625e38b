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
// behind a short queue; a block that finds the queue full is written by the
// reader that passed it (whose read then waits for the disk) rather than
// dropped, so that a file read once is cached whole. On disk each object version is one
// sparse file with its blocks at their offsets, so that a sequential read
// of a cached object is a sequential read of one file (which the kernel
// reads ahead); an evicted block becomes a hole, and a file without blocks
// is removed.
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
	files    map[version]*versionFile   // guarded by mu: the files of the versions with blocks on disk
	latest   map[string]string          // guarded by mu: key -> ETag of the cached version whose first block is here
	openLRU  *list.List                 // guarded by mu: *versionFile with an open file, most recent first
	closed   bool                       // guarded by mu

	writes chan diskWrite
	done   chan struct{} // closed when the writer has stopped

	hits, misses, syncWrites int64 // guarded by mu: block lookups served and not found, blocks written by a reader (queue full)
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
	file *versionFile
}

// version is one object version: a file on disk.
type version struct{ key, etag string }

type versionFile struct {
	v      version
	path   string
	blocks int // blocks of the version on disk
	// f is open for reads and writes while it is used, and kept open for
	// the reads that follow (a block is read in 128 KiB pieces); at most
	// maxOpen files are. refs counts the reads and writes using it: a file
	// in use is closed by the last of them.
	f        *os.File
	openElem *list.Element // in openLRU while open
	refs     int
}

type diskWrite struct {
	k    blockKey
	data []byte
}

// diskQueue is how many blocks may wait for the disk writer (memory outside
// the budget: at most this many blocks).
const diskQueue = 16

// maxOpen is how many version files the cache keeps open.
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
		files: map[version]*versionFile{}, latest: map[string]string{}, openLRU: list.New(), done: make(chan struct{}),
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
	if idx == 0 {
		c.latest[key] = etag
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

// goneLocked records that block k has left the cache. Requires mu.
func (c *blockCache) goneLocked(k blockKey) {
	if k.idx == 0 && c.latest[k.key] == k.etag {
		delete(c.latest, k.key)
	}
}

// latestVersion returns the ETag of key's version whose first block the
// cache holds, if any.
func (c *blockCache) latestVersion(key string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	etag, ok := c.latest[key]
	return etag, ok
}

// toDisk queues a block for the disk tier, if there is one and it has room
// in its queue; otherwise the block is not cached.
func (c *blockCache) toDisk(k blockKey, data []byte) {
	c.mu.Lock()
	if c.diskMax < int64(len(data)) || c.closed || c.disk[k] != nil || c.pending[k] != nil {
		if c.disk[k] == nil && c.pending[k] == nil {
			c.goneLocked(k)
		}
		c.mu.Unlock()
		c.recycle(data)
		return
	}
	select {
	case c.writes <- diskWrite{k, data}:
		c.pending[k] = data
		c.mu.Unlock()
	default:
		// The writer is behind: write this block here. The reader that
		// passed it waits for the disk, which keeps the queue's memory
		// bounded and the cache complete.
		c.pending[k] = data
		c.syncWrites++
		c.mu.Unlock()
		c.write(diskWrite{k, data})
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

// writer writes queued blocks to disk, each into its version's file,
// evicting the least recently used blocks to stay within diskMax.
func (c *blockCache) writer() {
	defer close(c.done)
	for w := range c.writes {
		c.write(w)
		c.recycle(w.data)
	}
}

func (c *blockCache) write(w diskWrite) {
	v := version{w.k.key, w.k.etag}
	c.mu.Lock()
	vf := c.files[v]
	if vf == nil {
		vf = &versionFile{v: v, path: c.path(v)}
		c.files[v] = vf
	}
	err := c.openLocked(vf)
	if err != nil {
		c.dropFileLocked(vf)
		delete(c.pending, w.k)
		c.goneLocked(w.k)
		c.mu.Unlock()
		c.fs.log.Error(err, "read cache: creating a file failed", "dir", c.dir)
		return
	}
	vf.refs++
	f := vf.f
	c.mu.Unlock()

	_, err = f.WriteAt(w.data, w.k.idx*blockSize)

	c.mu.Lock()
	defer c.mu.Unlock()
	vf.refs--
	delete(c.pending, w.k)
	if err != nil || c.closed {
		c.goneLocked(w.k)
		if err != nil {
			c.fs.log.Error(err, "read cache: writing a block failed", "dir", c.dir)
		}
		c.dropFileLocked(vf)
		return
	}
	n := int64(len(w.data))
	for c.diskUsed+n > c.diskMax && c.diskLRU.Len() > 0 {
		c.evictDiskLocked(c.diskLRU.Back())
	}
	c.disk[w.k] = c.diskLRU.PushFront(&diskBlock{k: w.k, size: n, file: vf})
	c.diskUsed += n
	vf.blocks++
}

// evictDiskLocked removes a disk block: a hole in its file, or the whole
// file when it was the last. Requires mu.
func (c *blockCache) evictDiskLocked(e *list.Element) {
	b := e.Value.(*diskBlock)
	c.diskLRU.Remove(e)
	delete(c.disk, b.k)
	c.diskUsed -= b.size
	c.goneLocked(b.k)
	vf := b.file
	vf.blocks--
	if vf.blocks == 0 {
		c.dropFileLocked(vf)
		return
	}
	if c.openLocked(vf) == nil {
		// A hole gives the space back; a failure only costs space until
		// the file goes.
		_ = unix.Fallocate(int(vf.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, b.k.idx*blockSize, b.size)
	}
}

// dropFileLocked removes a version's file (it has no blocks left, or could
// not be written); a read or write still using it keeps it open until it
// is done. Requires mu.
func (c *blockCache) dropFileLocked(vf *versionFile) {
	if c.files[vf.v] == vf {
		delete(c.files, vf.v)
	}
	_ = os.Remove(vf.path)
	c.closeLocked(vf)
}

// closeLocked closes a version's file unless it is in use (its last user
// closes it then). Requires mu.
func (c *blockCache) closeLocked(vf *versionFile) {
	if vf.refs > 0 || vf.f == nil {
		return
	}
	vf.f.Close()
	vf.f = nil
	c.openLRU.Remove(vf.openElem)
	vf.openElem = nil
}

// openLocked opens a version's file (creating it), closing the least
// recently used idle files beyond maxOpen. Requires mu.
func (c *blockCache) openLocked(vf *versionFile) error {
	if vf.f != nil {
		c.openLRU.MoveToFront(vf.openElem)
		return nil
	}
	f, err := os.OpenFile(vf.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	vf.f = f
	vf.openElem = c.openLRU.PushFront(vf)
	for e := c.openLRU.Back(); c.openLRU.Len() > maxOpen && e != nil; {
		prev := e.Prev()
		c.closeLocked(e.Value.(*versionFile))
		e = prev
	}
	return nil
}

// path is where a version's blocks live on disk: a hash, so that keys of
// any length and characters make valid names.
func (c *blockCache) path(v version) string {
	h := sha256.New()
	io.WriteString(h, v.key)
	h.Write([]byte{0})
	io.WriteString(h, v.etag)
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
	vf := b.file
	if err := c.openLocked(vf); err != nil {
		c.evictDiskLocked(e)
		c.mu.Unlock()
		c.fs.log.Error(err, "read cache: a file is gone", "dir", c.dir)
		return 0
	}
	vf.refs++
	f := vf.f
	c.hits++
	c.mu.Unlock()
	if in == 0 {
		// FUSE reads come 128 KiB at a time, several at once and not
		// quite in order, which defeats the kernel's readahead: without
		// this every one of them is a disk request of its own. Entering a
		// block, ask for it and the next one in one go.
		_ = unix.Fadvise(int(f.Fd()), k.idx*blockSize, 2*blockSize, unix.FADV_WILLNEED)
	}
	n, err := f.ReadAt(dst[:min(int64(len(dst)), b.size-in)], k.idx*blockSize+in)
	c.mu.Lock()
	vf.refs--
	if c.closed || c.files[vf.v] != vf || c.openLRU.Len() > maxOpen {
		c.closeLocked(vf)
	}
	c.mu.Unlock()
	if err != nil && !errors.Is(err, io.EOF) {
		c.fs.log.Error(err, "read cache: reading a block failed", "dir", c.dir)
		return 0
	}
	return n
}

// CacheStats are the read cache's counters and sizes.
type CacheStats struct {
	MemoryBytes, DiskBytes int64 // held now
	Hits, Misses           int64 // block lookups by reads
	SyncWrites             int64 // blocks a reader wrote to disk itself (the writer was behind)
}

// stats reports the counters (zero for a nil cache).
func (c *blockCache) stats() CacheStats {
	if c == nil {
		return CacheStats{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{MemoryBytes: c.memUsed, DiskBytes: c.diskUsed, Hits: c.hits, Misses: c.misses, SyncWrites: c.syncWrites}
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
	for _, vf := range c.files {
		c.closeLocked(vf)
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
