package fs

import "sync"

// bufPool recycles the part-size buffers of readahead chunks so that a
// sequential read does not allocate (and leave to the garbage collector) one
// fresh buffer per part. Every buffer it hands out or keeps idle is held in
// the mount's budget, so pooled memory counts against Options.MemoryLimit
// like any other buffer. Buffers of another size are allocated exactly and
// not kept: they are the short first chunk after a seek and the tail of a
// file, rare compared with full parts.
//
// Idle buffers keep their budget only while some readahead is open (users
// counts them); the last close empties the pool, so an idle mount holds no
// buffer memory. Taking from the pool never blocks: when the budget is short
// get fails and the caller reads without buffering.
type bufPool struct {
	mem     *budget
	size    int64 // the pooled buffer size (PartSize)
	maxIdle int   // idle buffers kept at most

	mu    sync.Mutex
	idle  [][]byte // guarded by mu; each holds size bytes of budget
	users int      // guarded by mu; open readaheads
}

func newBufPool(mem *budget, size int64, maxIdle int) *bufPool {
	return &bufPool{mem: mem, size: size, maxIdle: maxIdle}
}

// get returns a buffer of length n whose n bytes (size bytes for a pooled
// buffer) are held in the budget, or false if the budget cannot give them
// while leaving reserve bytes free.
func (p *bufPool) get(n, reserve int64) ([]byte, bool) {
	if n != p.size {
		if !p.mem.tryAcquire(n, reserve) {
			return nil, false
		}
		return make([]byte, n), true
	}
	p.mu.Lock()
	if k := len(p.idle); k > 0 {
		b := p.idle[k-1]
		p.idle[k-1] = nil
		p.idle = p.idle[:k-1]
		p.mu.Unlock()
		return b, true
	}
	p.mu.Unlock()
	if !p.mem.tryAcquire(n, reserve) {
		return nil, false
	}
	return make([]byte, n), true
}

// put gives back a buffer from get. A pooled buffer stays idle (keeping its
// budget) while there is room and a user; anything else returns its memory.
func (p *bufPool) put(b []byte) {
	n := int64(len(b))
	if n == p.size {
		p.mu.Lock()
		if p.users > 0 && len(p.idle) < p.maxIdle {
			p.idle = append(p.idle, b)
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
	p.mem.release(n)
}

// open registers a readahead that may use the pool.
func (p *bufPool) open() {
	p.mu.Lock()
	p.users++
	p.mu.Unlock()
}

// close unregisters a readahead; the last one empties the pool.
func (p *bufPool) close() {
	p.mu.Lock()
	p.users--
	var freed int64
	if p.users <= 0 {
		p.users = 0
		for i, b := range p.idle {
			freed += int64(len(b))
			p.idle[i] = nil
		}
		p.idle = p.idle[:0]
	}
	p.mu.Unlock()
	p.mem.release(freed)
}

// idleBytes reports the budget held by idle buffers.
func (p *bufPool) idleBytes() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return int64(len(p.idle)) * p.size
}
