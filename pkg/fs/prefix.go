package fs

import (
	"container/list"
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/cosmount/cosmount/pkg/cos"
)

// lookupPrefix is how much of a file a lookup GETs: the attributes come
// with the response anyway (size, ETag, Last-Modified, s3fs metadata), and
// so do the first bytes, which the read that usually follows then needs no
// request for. A file up to this size costs one request, lookup and read
// together; a larger one reads on from here. It is one FUSE read, so a
// stat of a large object moves little more than a HEAD would.
const lookupPrefix = 128 * KiB

// lookupGet finds a file's attributes with a ranged GET of its first
// lookupPrefix bytes instead of a HEAD, and keeps those bytes in the
// prefix cache. An empty object answers a range with InvalidRange: it is
// HEADed instead, as is a file whose data the read cache holds.
func (f *FS) lookupGet(ctx context.Context, key string) (cos.ObjectInfo, error) {
	if f.cachedFile(key) {
		// The read cache holds the start of the version this mount knows:
		// a HEAD tells whether it is still the current one.
		return f.store.Head(ctx, key)
	}
	rc, info, err := f.store.Get(ctx, key, cos.GetOptions{Offset: 0, Length: lookupPrefix})
	if errors.Is(err, cos.ErrInvalidRange) {
		return f.store.Head(ctx, key)
	}
	if err != nil {
		return cos.ObjectInfo{}, err
	}
	defer rc.Close()
	n := min(info.Size, lookupPrefix)
	data := make([]byte, n)
	if _, err := io.ReadFull(rc, data); err != nil {
		// The attributes are good; only the bytes are not kept.
		f.log.V(2).Info("lookup GET: body not read", "key", key, "err", err)
		return info, nil
	}
	f.prefixes.put(key, info.ETag, data)
	if f.cache.enabled() && n == info.Size && n > 0 {
		// The whole object: its only block, for the read cache too.
		f.cache.put(key, info.ETag, 0, append([]byte(nil), data...))
	}
	return info, nil
}

// cachedFile reports whether the read cache holds the first block of the
// version of key that this mount last saw.
func (f *FS) cachedFile(key string) bool {
	if !f.cache.enabled() {
		return false
	}
	var etag string
	if file := f.liveFile(key); file != nil {
		file.attrMu.Lock()
		etag = file.info.ETag
		file.attrMu.Unlock()
	} else {
		// The kernel forgot the node (memory pressure, drop_caches): the
		// cache remembers which version it holds.
		etag, _ = f.cache.latestVersion(key)
	}
	return etag != "" && f.cache.has(key, etag, 0)
}

// prefixCache keeps the first bytes of files that lookups fetched, for the
// reads that follow, in a small LRU held in the memory budget. Entries are
// per object version (a read finds them only with the ETag it reads) and are
// served for AttrTTL after the lookup, like the attributes they came with;
// with AttrTTL 0 nothing is kept.
type prefixCache struct {
	mem     *budget
	reserve int64 // what the budget must keep free (the writers' reserve)
	max     int64 // bytes at most
	// ttl is how long an entry is served: the bytes came with the
	// attributes, and are trusted as long as those are (AttrTTL).
	ttl time.Duration
	now func() time.Time

	mu    sync.Mutex
	used  int64                    // guarded by mu
	lru   *list.List               // guarded by mu: *prefixEntry, most recent first
	byKey map[string]*list.Element // guarded by mu
}

type prefixEntry struct {
	key, etag string
	data      []byte
	at        time.Time // when the lookup fetched it
}

func newPrefixCache(mem *budget, reserve, max int64, ttl time.Duration, now func() time.Time) *prefixCache {
	return &prefixCache{mem: mem, reserve: reserve, max: max, ttl: ttl, now: now, lru: list.New(), byKey: map[string]*list.Element{}}
}

// put keeps data as the first bytes of (key, etag), replacing what the key
// had, if the budget and the cache's bound have room.
func (c *prefixCache) put(key, etag string, data []byte) {
	n := int64(len(data))
	if n == 0 || n > c.max || c.ttl == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(key)
	for c.used+n > c.max && c.lru.Len() > 0 {
		c.removeLocked(c.lru.Back().Value.(*prefixEntry).key)
	}
	if !c.mem.tryAcquire(n, c.reserve) {
		return
	}
	c.used += n
	c.byKey[key] = c.lru.PushFront(&prefixEntry{key: key, etag: etag, data: data, at: c.now()})
}

// read copies what the cache holds of (key, etag) at off into dst and
// returns the number of bytes copied (0 when it holds nothing there).
func (c *prefixCache) read(key, etag string, off int64, dst []byte) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[key]
	if !ok {
		return 0
	}
	p := e.Value.(*prefixEntry)
	if p.etag != etag || off >= int64(len(p.data)) || c.now().Sub(p.at) >= c.ttl {
		return 0
	}
	c.lru.MoveToFront(e)
	return copy(dst, p.data[off:])
}

// end returns how many of the first bytes of (key, etag) the cache holds.
func (c *prefixCache) end(key, etag string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[key]; ok {
		if p := e.Value.(*prefixEntry); p.etag == etag && c.now().Sub(p.at) < c.ttl {
			return int64(len(p.data))
		}
	}
	return 0
}

// remove forgets key (it was replaced, renamed or deleted by this mount).
func (c *prefixCache) remove(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(key)
}

func (c *prefixCache) removeLocked(key string) {
	e, ok := c.byKey[key]
	if !ok {
		return
	}
	n := int64(len(e.Value.(*prefixEntry).data))
	c.lru.Remove(e)
	delete(c.byKey, key)
	c.used -= n
	c.mem.release(n)
}

// clear forgets everything (the filesystem stops being served).
func (c *prefixCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.lru.Len() > 0 {
		c.removeLocked(c.lru.Back().Value.(*prefixEntry).key)
	}
}

// bytes reports what the cache holds.
func (c *prefixCache) bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}
