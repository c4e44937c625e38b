package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/cosmount/cosmount/pkg/cos"
)

const (
	// nearWindow is how far a read may land from the stream (behind its
	// oldest buffered byte or beyond its furthest) and still count as
	// sequential. With AsyncRead the kernel has up to max_background (12)
	// reads of at most 128 KiB in flight and they reach us in any order, so
	// a few MiB covers every reordering; only a real seek jumps further.
	nearWindow = 4 * MiB
	// seekWindow is what a read that starts a new stream away from the
	// beginning of the file fetches: enough for one application read, small
	// enough that random reads do not download whole parts.
	seekWindow = 1 * MiB
)

// readahead turns the reads of one open file into ranged GETs. A stream
// starts at the first read and after every seek: a read in the first part
// fetches that whole part (most reads from the start of a file go on to the
// end, and a file smaller than a part costs one GET), any other read fetches
// seekWindow. From the second read near the stream on, access is sequential
// and the prefetch keeps depth part-aligned chunks of PartSize ahead of the
// furthest read, each one ranged GET in the background, so a sequential read
// costs one GET per part, like a multipart download. Reads arriving slightly
// out of order (within nearWindow) neither restart the stream nor drop
// chunks; a far jump drops the prefetch and starts a new stream.
//
// Chunk buffers come from the mount's buffer pool, inside the memory budget.
// When the budget is short the prefetch shrinks and a read falls back to a
// GET of exactly what was asked into the kernel's buffer; reads never wait
// for memory (a reader blocked on memory that another of its own descriptors
// holds would never wake). Every GET carries If-Match with the ETag the
// stream started from, so a replaced object gives ESTALE instead of a mix of
// two versions. Chunk GETs run on the handle's context, not the request's:
// an interrupted read returns EINTR and leaves the prefetch intact for the
// retry.
type readahead struct {
	fs     *FS
	ctx    context.Context // canceled when the handle is released or the mount ends
	cancel context.CancelFunc

	pooled bool // registered with the buffer pool (on the first chunk)

	etag   string
	reads  int      // consecutive reads of the current stream; 0: no stream
	hi     int64    // end of the furthest read of the stream
	next   int64    // end of the buffered range (chunks end here)
	chunks []*chunk // ascending and contiguous
}

// chunk is one background ranged GET of [off, off+n) into buf.
type chunk struct {
	off, n int64
	buf    []byte // n bytes from the pool; the budget is held until drop
	done   chan struct{}
	err    error // set before done is closed
	cancel context.CancelFunc
}

func newReadahead(f *FS) *readahead {
	// Chunk GETs outlive the read that started them, not the mount.
	ctx, cancel := context.WithCancel(f.life)
	return &readahead{fs: f, ctx: ctx, cancel: cancel}
}

// readaheadDepth is how many chunks a sequential stream keeps in flight:
// at least the upload concurrency, as a multipart download would, and as
// many as ReadaheadMax holds.
func readaheadDepth(o Options) int {
	return max(o.UploadConcurrency, int(o.ReadaheadMax/o.PartSize))
}

// lo is the start of the buffered range.
func (r *readahead) lo() int64 {
	if len(r.chunks) > 0 {
		return r.chunks[0].off
	}
	return r.next
}

// read fills dst from offset off of the object (key, etag, size).
func (r *readahead) read(ctx context.Context, key, etag string, size, off int64, dst []byte) (int, error) {
	if off >= size || len(dst) == 0 {
		return 0, nil
	}
	end := min(off+int64(len(dst)), size)
	dst = dst[:end-off]
	if r.fs.opts.ReadaheadMax == 0 {
		return r.get(ctx, key, etag, off, dst)
	}
	if etag != r.etag {
		r.reset()
		r.etag = etag
	}
	if r.reads > 0 && off >= min(r.lo(), r.hi)-nearWindow && off <= max(r.next, r.hi)+nearWindow {
		r.reads = min(r.reads+1, 2)
		r.hi = max(r.hi, end)
	} else {
		r.start(key, size, off, end)
	}
	r.consume(off)
	if r.reads >= 2 {
		r.prefetch(key, size)
	}

	pos := off
	for pos < end {
		lo, next := r.lo(), r.next
		if pos < lo || pos >= next {
			// Not buffered: behind the stream, or the budget was short.
			stop := end
			if pos < lo {
				stop = min(end, lo)
			}
			n, err := r.get(ctx, key, etag, pos, dst[pos-off:stop-off])
			if err != nil {
				return 0, err
			}
			if int64(n) < stop-pos {
				return 0, fmt.Errorf("read %q: object shorter than expected: %w", key, syscall.EIO)
			}
			pos = stop
			continue
		}
		c := r.chunkAt(pos)
		select {
		case <-c.done:
		case <-ctx.Done():
			// Interrupted: the chunk keeps downloading for the retry.
			return 0, ctx.Err()
		}
		if c.err != nil {
			err := chunkErr(key, c, c.err)
			// Start over at the next read; the failed range is fetched anew.
			r.reset()
			return 0, err
		}
		pos += int64(copy(dst[pos-off:], c.buf[pos-c.off:]))
	}
	return len(dst), nil
}

// start begins a new stream at a read of [off, end): the prefetch of the
// previous stream is dropped and one chunk covers the read.
func (r *readahead) start(key string, size, off, end int64) {
	r.dropAll()
	r.reads, r.hi = 1, end
	part := r.fs.opts.PartSize
	from, to := off, min(size, off+max(min(seekWindow, r.fs.opts.ReadaheadMax), end-off))
	if off < part {
		from, to = 0, min(size, max(part, end))
	}
	r.next = from
	r.add(key, from, to)
}

// consume drops the chunks the stream has left behind by more than the
// reordering window; their buffers go back to the pool. off is the read
// being served.
func (r *readahead) consume(off int64) {
	for len(r.chunks) > 0 && r.chunks[0].off+r.chunks[0].n <= r.hi-nearWindow {
		r.drop(r.chunks[0])
		r.chunks[0] = nil
		r.chunks = r.chunks[1:]
	}
	if len(r.chunks) == 0 && r.next < off {
		// Nothing buffered (dropped, or the budget was short): the range
		// restarts at this read rather than fetching what lies behind it.
		r.next = off
	}
}

// prefetch keeps depth part-aligned chunks ahead of the stream's head.
func (r *readahead) prefetch(key string, size int64) {
	part := r.fs.opts.PartSize
	target := min(size, alignUp(r.hi, part)+int64(readaheadDepth(r.fs.opts)-1)*part)
	for r.next < target {
		if !r.add(key, r.next, min(target, alignUp(r.next+1, part))) {
			return
		}
	}
}

// add starts the GET of [from, to) at the end of the buffered range, if the
// budget has the memory; it reports whether it did.
func (r *readahead) add(key string, from, to int64) bool {
	if to <= from {
		return false
	}
	if !r.pooled {
		r.fs.bufs.open()
		r.pooled = true
	}
	buf, ok := r.fs.bufs.get(to-from, r.fs.reserve())
	if !ok {
		return false
	}
	ctx, cancel := context.WithCancel(r.ctx)
	c := &chunk{off: from, n: to - from, buf: buf, done: make(chan struct{}), cancel: cancel}
	r.chunks = append(r.chunks, c)
	r.next = to
	go func(etag string) {
		defer close(c.done)
		c.err = r.fetch(ctx, key, etag, c)
	}(r.etag)
	return true
}

// fetch fills a chunk, retrying a failed GET once.
func (r *readahead) fetch(ctx context.Context, key, etag string, c *chunk) error {
	n, err := r.get(ctx, key, etag, c.off, c.buf)
	if err == nil && int64(n) != c.n {
		err = fmt.Errorf("read %q: object shorter than expected", key)
	}
	if err != nil && retryable(ctx, err) {
		n, err = r.get(ctx, key, etag, c.off, c.buf)
		if err == nil && int64(n) != c.n {
			err = fmt.Errorf("read %q: object shorter than expected", key)
		}
	}
	return err
}

// retryable says whether a second GET could succeed where one failed: not
// when the chunk was dropped, nor when the answer was definite.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	for _, kind := range []error{cos.ErrPreconditionFailed, cos.ErrNotFound, cos.ErrAccessDenied, cos.ErrInvalidRange} {
		if errors.Is(err, kind) {
			return false
		}
	}
	return true
}

// chunkErr is what a read returns for a failed chunk. A chunk being waited
// for was never canceled, so a context error in it is the store's own
// timeout: that is an I/O error, not an interrupt.
func chunkErr(key string, c *chunk, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("read %q [%d, %d): %v: %w", key, c.off, c.off+c.n, err, syscall.EIO)
	}
	return err
}

// chunkAt returns the chunk holding pos, which must be buffered. There
// are at most depth+1 chunks, so a scan is cheap.
func (r *readahead) chunkAt(pos int64) *chunk {
	for _, c := range r.chunks {
		if pos >= c.off && pos < c.off+c.n {
			return c
		}
	}
	panic(fmt.Sprintf("readahead: offset %d not in [%d, %d)", pos, r.lo(), r.next))
}

// get is one ranged GET into dst that fails (ESTALE) if the object changed.
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

// drop cancels a chunk and, once its GET has stopped, returns its buffer.
func (r *readahead) drop(c *chunk) {
	c.cancel()
	<-c.done
	r.fs.bufs.put(c.buf)
	c.buf = nil
}

func (r *readahead) dropAll() {
	for i, c := range r.chunks {
		r.drop(c)
		r.chunks[i] = nil
	}
	r.chunks = r.chunks[:0]
}

// reset forgets the stream; the next read starts a new one.
func (r *readahead) reset() {
	r.dropAll()
	r.reads, r.hi, r.next = 0, 0, 0
}

// close releases everything; the handle is gone.
func (r *readahead) close() {
	r.dropAll()
	r.cancel()
	if r.pooled {
		r.fs.bufs.close()
		r.pooled = false
	}
}

// alignUp rounds n up to a multiple of a.
func alignUp(n, a int64) int64 {
	return (n + a - 1) / a * a
}
