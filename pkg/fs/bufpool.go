package fs

import "sync"

// bufPool recycles buffers of one size (the blockSize buffers of readahead
// chunks, the PartSize buffers of streaming uploads), so that a sequential
// read or write does not allocate fresh memory for every block or part. Fresh memory is expensive: the
// kernel faults every page in on first touch, and on a virtual machine a
// fault costs microseconds; a pooled buffer was faulted in long ago.
//
// Every buffer the pool keeps idle holds its size in bytes of the mount's
// budget, so pooled memory counts against Options.MemoryLimit like any
// other buffer. Idle buffers keep their budget only while some user is
// registered (an open readahead, a streaming upload); the last close empties
// the pool, so an idle mount holds no buffer memory. Taking from the pool
// never blocks and never acquires budget: the caller decides how the buffer
// is paid for (see take).
type bufPool struct {
	mem     *budget
	size    int64 // the size of every pooled buffer
	maxIdle int   // idle buffers kept at most

	mu    sync.Mutex
	idle  [][]byte // guarded by mu; each holds size bytes of budget
	users int      // guarded by mu
}

func newBufPool(mem *budget, size int64, maxIdle int) *bufPool {
	return &bufPool{mem: mem, size: size, maxIdle: maxIdle}
}

// take returns an idle buffer, whose size bytes of budget move to the
// caller, or nil when none is idle.
func (p *bufPool) take() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := len(p.idle)
	if k == 0 {
		return nil
	}
	b := p.idle[k-1]
	p.idle[k-1] = nil
	p.idle = p.idle[:k-1]
	return b
}

// get returns a buffer whose budget the caller already holds (reserved
// bytes): an idle one, whose own budget then goes back, or a new one.
func (p *bufPool) get() []byte {
	if b := p.take(); b != nil {
		p.mem.release(p.size)
		return b
	}
	return make([]byte, p.size)
}

// put gives back a buffer holding len(b) bytes of budget. A buffer of the
// pool's size stays idle (keeping its budget) while there is room and a
// user; otherwise its budget is returned.
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

// shrink frees idle buffers until their budget covers n bytes (or none is
// left): memory that a pool keeps for later is given to someone who needs
// it now.
func (p *bufPool) shrink(n int64) {
	var freed int64
	p.mu.Lock()
	for freed < n && len(p.idle) > 0 {
		k := len(p.idle) - 1
		freed += int64(len(p.idle[k]))
		p.idle[k] = nil
		p.idle = p.idle[:k]
	}
	p.mu.Unlock()
	p.mem.release(freed)
}

// open registers a user that may put buffers back.
func (p *bufPool) open() {
	p.mu.Lock()
	p.users++
	p.mu.Unlock()
}

// close unregisters a user; the last one empties the pool.
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
