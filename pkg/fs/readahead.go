package fs

import (
	"context"
	"fmt"
	"io"

	"github.com/cosmount/cosmount/pkg/cos"
)

const (
	initialWindow = 1 * MiB
	minChunk      = 256 * KiB
	maxChunk      = 8 * MiB
)

// readahead prefetches ranged GETs ahead of a sequential reader. The window
// starts at 1 MiB and doubles each time a prefetched chunk is consumed, up
// to ReadaheadMax; a read outside the prefetched range (a seek) drops the
// prefetch and starts over. A window is fetched as several chunks in
// parallel. Chunk buffers come from the memory budget; when it is short,
// reads go straight to the store for exactly what the kernel asked.
type readahead struct {
	fs     *FS
	ctx    context.Context // canceled when the handle is released
	cancel context.CancelFunc

	etag   string
	window int64    // 0 until the first read
	lo     int64    // reads in [lo, next] count as sequential
	next   int64    // end of the prefetched range
	chunks []*chunk // ascending, contiguous, ending at next
}

type chunk struct {
	off, n int64
	data   []byte
	done   chan struct{}
	err    error // set before done is closed
	cancel context.CancelFunc
}

func newReadahead(f *FS) *readahead {
	ctx, cancel := context.WithCancel(context.Background())
	return &readahead{fs: f, ctx: ctx, cancel: cancel}
}

func (r *readahead) initial() int64 {
	if m := r.fs.opts.ReadaheadMax; m < initialWindow {
		return m
	}
	return initialWindow
}

func (r *readahead) chunkSize() int64 {
	cs := r.window / 4
	if cs < minChunk {
		cs = minChunk
	}
	if cs > maxChunk {
		cs = maxChunk
	}
	if cs > r.window {
		cs = r.window
	}
	return cs
}

// read fills dst from offset off of the object (key, etag, size).
func (r *readahead) read(ctx context.Context, key, etag string, size, off int64, dst []byte) (int, error) {
	if off >= size || len(dst) == 0 {
		return 0, nil
	}
	end := off + int64(len(dst))
	if end > size {
		end = size
	}
	if r.fs.opts.ReadaheadMax == 0 {
		return r.direct(ctx, key, etag, off, dst[:end-off])
	}
	if etag != r.etag {
		r.dropAll()
		r.etag, r.window = etag, 0
	}
	if r.window == 0 || off < r.lo || off > r.next {
		r.dropAll()
		r.window, r.lo, r.next = r.initial(), off, off
	}
	// Consumed chunks go, and each one consumed widens the window.
	for len(r.chunks) > 0 && r.chunks[0].off+r.chunks[0].n <= off {
		r.drop(r.chunks[0])
		r.chunks = r.chunks[1:]
		if r.window < r.fs.opts.ReadaheadMax {
			r.window = min(2*r.window, r.fs.opts.ReadaheadMax)
		}
	}
	r.lo = off
	if len(r.chunks) > 0 {
		// Reads may arrive out of order (async reads): anything still
		// prefetched is sequential enough.
		r.lo = r.chunks[0].off
	}
	target := min(max(off+r.window, end), size)
	for r.next < target {
		n := min(r.chunkSize(), size-r.next)
		if !r.fs.mem.tryAcquire(n, r.fs.reserve()) {
			break
		}
		r.chunks = append(r.chunks, r.fetch(key, etag, r.next, n))
		r.next += n
	}

	pos := off
	for _, c := range r.chunks {
		if pos >= end {
			break
		}
		if c.off+c.n <= pos {
			continue
		}
		select {
		case <-c.done:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if c.err != nil {
			err := c.err
			r.dropAll()
			r.window = 0
			return 0, err
		}
		pos += int64(copy(dst[pos-off:end-off], c.data[pos-c.off:]))
	}
	if pos < end {
		n, err := r.direct(ctx, key, etag, pos, dst[pos-off:end-off])
		if err != nil {
			return 0, err
		}
		pos += int64(n)
	}
	return int(pos - off), nil
}

// fetch starts a background ranged GET of [off, off+n); n bytes of budget
// are already held.
func (r *readahead) fetch(key, etag string, off, n int64) *chunk {
	ctx, cancel := context.WithCancel(r.ctx)
	c := &chunk{off: off, n: n, done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(c.done)
		buf := make([]byte, n)
		got, err := r.get(ctx, key, etag, off, buf)
		if err == nil && int64(got) != n {
			err = fmt.Errorf("read %q: object shorter than expected", key)
		}
		c.data, c.err = buf, err
	}()
	return c
}

// direct reads [off, off+len(dst)) without buffering.
func (r *readahead) direct(ctx context.Context, key, etag string, off int64, dst []byte) (int, error) {
	return r.get(ctx, key, etag, off, dst)
}

// get is one ranged GET that fails (ESTALE) if the object changed.
func (r *readahead) get(ctx context.Context, key, etag string, off int64, dst []byte) (int, error) {
	rc, _, err := r.fs.store.Get(ctx, key, cos.GetOptions{Offset: off, Length: int64(len(dst)), IfMatch: etag})
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	n, err := io.ReadFull(rc, dst)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		err = nil
	}
	return n, err
}

// drop cancels a chunk and returns its memory once its fetch has stopped.
func (r *readahead) drop(c *chunk) {
	c.cancel()
	<-c.done
	c.data = nil
	r.fs.mem.release(c.n)
}

func (r *readahead) dropAll() {
	for _, c := range r.chunks {
		r.drop(c)
	}
	r.chunks = nil
}

// close releases everything; the handle is gone.
func (r *readahead) close() {
	r.dropAll()
	r.cancel()
}
