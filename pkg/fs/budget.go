package fs

import (
	"context"
	"sync"
)

// budget accounts every byte of the mount's write and read buffers against
// Options.MemoryLimit. Streaming writers block in acquire until uploads give
// memory back; opportunistic users (small-file buffers, readahead) use
// tryAcquire with a reserve so they can never starve a streaming writer:
// they fall back to a temporary file or to unbuffered reads instead.
type budget struct {
	mu      sync.Mutex
	limit   int64
	used    int64 // guarded by mu
	high    int64 // guarded by mu; high-water mark of used
	changed chan struct{}
}

func newBudget(limit int64) *budget {
	return &budget{limit: limit, changed: make(chan struct{})}
}

// acquire blocks until n bytes fit under the limit or ctx ends.
func (b *budget) acquire(ctx context.Context, n int64) error {
	for {
		b.mu.Lock()
		if b.used+n <= b.limit {
			b.take(n)
			b.mu.Unlock()
			return nil
		}
		wait := b.changed
		b.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// tryAcquire takes n bytes only if at least reserve bytes stay free.
func (b *budget) tryAcquire(n, reserve int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n+reserve > b.limit {
		return false
	}
	b.take(n)
	return true
}

func (b *budget) take(n int64) {
	b.used += n
	if b.used > b.high {
		b.high = b.used
	}
}

func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	if b.used < 0 {
		// A release without its acquire is a bug; tests catch it through
		// stats() returning to zero, production keeps going.
		b.used = 0
	}
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// stats returns the bytes in use and the high-water mark.
func (b *budget) stats() (used, high int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.high
}
