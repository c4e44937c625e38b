package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
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
	// keepBehind is how far behind the stream's head blocks are kept for
	// reads that arrive late: the kernel has at most 12 reads of 128 KiB
	// (1.5 MiB) in flight. A read that finds its block given back costs a
	// GET of its own, nothing worse.
	keepBehind = 2 * MiB
	// seekWindow is what a read that starts a new stream away from the
	// beginning of the file fetches: enough for one application read, small
	// enough that random reads do not download whole parts.
	seekWindow = 1 * MiB
	// blockSize is the unit in which chunks hold memory: a chunk's GET fills
	// blocks one after the other, a read waits only for the blocks it
	// needs, and the blocks the stream has passed go back to the pool while
	// the rest of the part is still being read.
	blockSize = 1 * MiB
	// startWindow is the number of chunks a new sequential stream keeps
	// ahead: the one being read and the next. A read that has to wait for
	// a chunk that is still downloading widens the window by one chunk, up
	// to the stream's share of the budget (readahead.limits).
	startWindow = 2
)

// readahead turns the reads of one open file into ranged GETs. A stream
// starts at the first read and after every seek: a read in the first part
// fetches that whole part (most reads from the start of a file go on to the
// end, and a file smaller than a part costs one GET), any other read fetches
// seekWindow. From the second read near the stream on, access is sequential
// and the prefetch keeps a window of chunks (part-sized, aligned) ahead of
// the furthest read, each one ranged GET in the background, so a sequential
// read costs one GET per part, like a multipart download. Reads arriving
// slightly out of order (within nearWindow) neither restart the stream nor
// drop chunks; a far jump drops the prefetch and starts a new stream.
//
// Memory. All streams of the mount share a quarter of the budget that the
// writers' reserve leaves (readBudget), each stream at most its fair share
// of it and at most ReadaheadMax; when the share is below a part, chunks get
// smaller (down to one block) rather than fewer. A chunk reserves its bytes
// in the budget when it starts, takes a block buffer from the pool only when
// its GET has data for it, and gives each block back as soon as the stream
// is keepBehind past it, so a stream holds what it has fetched but not yet
// read, not whole parts. The window starts at startWindow chunks and widens
// only while reads wait for data: where the store delivers faster than the
// application reads, a stream keeps two chunks; where it is slower, it
// fetches as many in parallel as its share allows.
//
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

	pooled    bool // registered with the buffer pool (on the first chunk)
	streaming bool // counted in FS.streams: a sequential stream with prefetch

	etag   string
	reads  int      // consecutive reads of the current stream; 0: no stream
	hi     int64    // end of the furthest read of the stream
	next   int64    // end of the range the prefetch has covered
	window int      // chunks kept ahead (see startWindow)
	chunks []*chunk // ascending, ending at next; gaps are in the read cache
	first  *chunk   // the chunk the stream started with: waiting for it is latency, not slowness
}

// chunk is one background ranged GET of [off, off+n), filling its blocks in
// order. Block k covers the part of grid block off/blockSize+k that lies in
// the chunk; its buffer is a pooled blockSize buffer when it covers a whole
// grid block, else exactly its length.
type chunk struct {
	off, n    int64
	key, etag string // the object version, for the read cache
	size      int64  // the object's size
	cancel    context.CancelFunc
	exited    chan struct{} // closed when the GET goroutine has stopped

	mu       sync.Mutex
	bufs     [][]byte      // guarded by mu; nil until filled, and after release
	filled   int64         // guarded by mu: [off, off+filled) is in bufs
	done     bool          // guarded by mu: the GET has ended
	err      error         // guarded by mu: its error, once done
	wake     chan struct{} // guarded by mu: closed when filled or done changes
	reserved int64         // guarded by mu: budget held for blocks not allocated yet

	released int  // blocks [0, released) were given back; readahead side only
	waitedOn bool // a read waited for this chunk's data; readahead side only
}

func newReadahead(f *FS) *readahead {
	// Chunk GETs outlive the read that started them, not the mount.
	ctx, cancel := context.WithCancel(f.life)
	return &readahead{fs: f, ctx: ctx, cancel: cancel}
}

// readBudget is what all readahead streams of the mount share: a quarter
// of what the writers' reserve leaves (60 MiB of the default 256). One
// stream is limited by ReadaheadMax before that; many get smaller chunks,
// which keeps their data warm in the CPU's cache between the GET that
// writes it and the FUSE read that copies it out, and keeps the process
// small when every fresh page costs a fault. Profiled with 8 readers of
// 64 MiB each: half the budget (8 MiB chunks) took 2.3 s of CPU and 205
// MiB of RSS, a quarter (5 MiB chunks) 1.2 s and 162 MiB.
func (f *FS) readBudget() int64 {
	return (f.opts.MemoryLimit - f.reserve()) / 4
}

// limits returns the chunk size of this stream and the most it may keep
// ahead: ReadaheadMax, at most the fair share of readBudget among the
// streams less what a stream keeps behind its head, at least one block.
func (r *readahead) limits() (unit, maxAhead int64) {
	part := r.fs.opts.PartSize
	share := r.fs.readBudget()/max(1, r.fs.streams.Load()) - keepBehind
	maxAhead = min(r.fs.opts.ReadaheadMax, share)
	if maxAhead >= part {
		return part, maxAhead
	}
	unit = max(blockSize, maxAhead/blockSize*blockSize)
	return unit, unit
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
	if n := r.fs.prefixes.read(key, etag, off, dst); n > 0 {
		// The first bytes came with the lookup (lookupGet).
		if n == len(dst) {
			return n, nil
		}
		m, err := r.read(ctx, key, etag, size, off+int64(n), dst[n:])
		if err != nil {
			return 0, err
		}
		return n + m, nil
	}
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
		r.setStreaming(true)
		r.prefetch(key, size)
	}

	pos := off
	for pos < end {
		c := r.chunkAt(pos)
		if c == nil && r.fs.cache.enabled() {
			// What the stream does not hold may be in the read cache
			// (blocks it gave back go there).
			if n := r.fs.cache.read(key, etag, pos, dst[pos-off:min(end, r.nextChunk(pos))-off]); n > 0 {
				pos += int64(n)
				continue
			}
		}
		if c == nil {
			// Not buffered: behind the stream, or the budget was short.
			stop := min(end, r.nextChunk(pos))
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
		stop := min(end, c.off+c.n)
		waited, err := c.wait(ctx, r.fs, stop-c.off)
		if err != nil {
			if ctx.Err() != nil {
				// Interrupted: the chunk keeps downloading for the retry.
				return 0, ctx.Err()
			}
			err = chunkErr(key, c, err)
			// Start over at the next read; the failed range is fetched anew.
			r.reset()
			return 0, err
		}
		if waited && c != r.first && !c.waitedOn {
			// The application reads faster than the window delivers:
			// fetch one more chunk in parallel from now on.
			c.waitedOn = true
			r.widen()
		}
		c.copyTo(dst[pos-off:stop-off], pos)
		pos = stop
	}
	return len(dst), nil
}

// widen keeps one more chunk ahead, within the stream's share.
func (r *readahead) widen() {
	unit, maxAhead := r.limits()
	r.window = min(r.window+1, max(1, int(maxAhead/unit)))
}

// passed adjusts the window when the stream is done with chunk c: a chunk
// read without ever waiting means the window is at least wide enough, so it
// narrows by one (down to startWindow). Together with widen this keeps the
// window near the narrowest that hides the store's latency: a stream whose
// store is fast holds two chunks, not ReadaheadMax.
func (r *readahead) passed(c *chunk) {
	if !c.waitedOn && c != r.first && r.window > startWindow {
		r.window--
	}
}

// start begins a new stream at a read of [off, end): the prefetch of the
// previous stream is dropped and one chunk covers the read.
func (r *readahead) start(key string, size, off, end int64) {
	r.dropAll()
	r.setStreaming(false)
	r.reads, r.hi, r.window = 1, end, startWindow
	unit, _ := r.limits()
	// Seeks start on a block boundary, so that the blocks they fetch line
	// up with those of a later sequential pass.
	from := off / blockSize * blockSize
	to := min(size, max(off+min(seekWindow, r.fs.opts.ReadaheadMax), end))
	if off < unit {
		from, to = 0, min(size, max(unit, end))
		if !r.fs.cache.enabled() {
			// What a lookup fetched is not fetched again (with the read
			// cache on it is: the cache keeps whole blocks only).
			from = max(from, min(r.fs.prefixes.end(key, r.etag), off))
		}
	}
	r.next = from
	r.first = nil
	from = r.skipCached(key, size, from, to)
	if r.add(key, size, r.next, r.cachedFrom(key, size, from, to)) {
		r.first = r.chunks[0]
	}
}

// skipCached moves the buffered range's end past the blocks from [from, to)
// on that the read cache holds, and returns where it stopped.
func (r *readahead) skipCached(key string, size, from, to int64) int64 {
	if !r.fs.cache.enabled() {
		return from
	}
	for from < to && from%blockSize == 0 && r.fs.cache.has(key, r.etag, from/blockSize) {
		from = min(size, from+blockSize)
	}
	if from > r.next {
		r.next = from
	}
	return from
}

// cachedFrom returns where, in [from, to), the first block the read cache
// holds starts (to if none): a chunk stops there.
func (r *readahead) cachedFrom(key string, size, from, to int64) int64 {
	if !r.fs.cache.enabled() {
		return to
	}
	for b := alignUp(from, blockSize); b < to; b += blockSize {
		if r.fs.cache.has(key, r.etag, b/blockSize) {
			return b
		}
	}
	return to
}

// setStreaming counts this readahead in (or out of) the mount's streams,
// which share readBudget.
func (r *readahead) setStreaming(on bool) {
	if r.streaming == on {
		return
	}
	r.streaming = on
	if on {
		r.fs.streams.Add(1)
	} else {
		r.fs.streams.Add(-1)
	}
}

// consume gives back the blocks the stream has left behind by more than
// keepBehind, and drops chunks with nothing left. off is the read
// being served.
func (r *readahead) consume(off int64) {
	behind := r.hi - keepBehind
	for len(r.chunks) > 0 {
		c := r.chunks[0]
		if !c.releaseBefore(r.fs, behind) {
			break
		}
		r.passed(c)
		r.chunks[0] = nil
		r.chunks = r.chunks[1:]
	}
	if len(r.chunks) == 0 && r.next < off {
		// Nothing buffered (dropped, or the budget was short): the range
		// restarts at this read rather than fetching what lies behind it.
		r.next = off
	}
}

// prefetch keeps the window of chunks ahead of the stream's head.
func (r *readahead) prefetch(key string, size int64) {
	unit, maxAhead := r.limits()
	r.window = min(r.window, max(1, int(maxAhead/unit)))
	target := min(size, alignUp(r.hi, unit)+int64(r.window-1)*unit)
	for r.next < target {
		if from := r.skipCached(key, size, r.next, target); from >= target {
			return
		}
		to := r.cachedFrom(key, size, r.next, min(target, alignUp(r.next+1, unit)))
		if !r.add(key, size, r.next, to) {
			return
		}
	}
}

// add starts the GET of [from, to) at the end of the buffered range, if the
// budget has the memory; it reports whether it did.
func (r *readahead) add(key string, size, from, to int64) bool {
	if to <= from {
		return false
	}
	if !r.fs.mem.tryAcquire(to-from, r.fs.reserve()) {
		// Idle blocks hold budget that this chunk can use instead.
		r.fs.bufs.shrink(to - from)
		if !r.fs.mem.tryAcquire(to-from, r.fs.reserve()) {
			return false
		}
	}
	if !r.pooled {
		r.fs.bufs.open()
		r.pooled = true
	}
	ctx, cancel := context.WithCancel(r.ctx)
	nblocks := (to-1)/blockSize - from/blockSize + 1
	c := &chunk{
		off: from, n: to - from, key: key, etag: r.etag, size: size, cancel: cancel, exited: make(chan struct{}),
		bufs: make([][]byte, nblocks), reserved: to - from,
	}
	r.chunks = append(r.chunks, c)
	r.next = to
	go func(etag string) {
		defer close(c.exited)
		err := r.fetch(ctx, key, etag, c)
		c.finish(err)
	}(r.etag)
	return true
}

// fetch fills a chunk; a failed GET is retried once from where it stopped.
func (r *readahead) fetch(ctx context.Context, key, etag string, c *chunk) error {
	err := r.fill(ctx, key, etag, c)
	if err != nil && retryable(ctx, err) {
		err = r.fill(ctx, key, etag, c)
	}
	return err
}

// fill GETs what the chunk still lacks and publishes every read of the body
// at once, so a read waiting for the first block does not wait for the part.
func (r *readahead) fill(ctx context.Context, key, etag string, c *chunk) error {
	c.mu.Lock()
	pos := c.off + c.filled
	c.mu.Unlock()
	end := c.off + c.n
	rc, _, err := r.fs.store.Get(ctx, key, cos.GetOptions{Offset: pos, Length: end - pos, IfMatch: etag})
	if err != nil {
		return err
	}
	defer rc.Close()
	for pos < end {
		buf, start := c.buffer(r.fs, pos)
		n, err := rc.Read(buf[pos-start:])
		if n > 0 {
			pos += int64(n)
			c.publish(pos - c.off)
		}
		switch {
		case err == io.EOF && pos < end:
			return fmt.Errorf("read %q: object shorter than expected", key)
		case err == io.EOF:
			return nil
		case err != nil:
			return err
		}
	}
	return nil
}

// block returns the index and the range of the block holding pos.
func (c *chunk) block(pos int64) (k int, start, end int64) {
	g := pos / blockSize
	k = int(g - c.off/blockSize)
	return k, max(c.off, g*blockSize), min(c.off+c.n, (g+1)*blockSize)
}

// buffer returns the buffer of the block holding pos (the GET's side),
// allocating it from the reservation, and where the buffer starts.
func (c *chunk) buffer(f *FS, pos int64) ([]byte, int64) {
	k, start, end := c.block(pos)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bufs[k] == nil {
		if end-start == blockSize {
			c.bufs[k] = f.bufs.get()
		} else {
			c.bufs[k] = make([]byte, end-start)
		}
		c.reserved -= end - start
	}
	return c.bufs[k][:end-start], start
}

// publish makes [off, off+filled) readable and wakes the waiting readers.
func (c *chunk) publish(filled int64) {
	c.mu.Lock()
	c.filled = filled
	if c.wake != nil {
		close(c.wake)
		c.wake = nil
	}
	c.mu.Unlock()
}

// finish records the end of the GET.
func (c *chunk) finish(err error) {
	c.mu.Lock()
	c.done, c.err = true, err
	if c.wake != nil {
		close(c.wake)
		c.wake = nil
	}
	c.mu.Unlock()
}

// wait blocks until the first need bytes of the chunk are filled, the GET
// failed, or ctx ends; waited reports whether the data was not there yet.
func (c *chunk) wait(ctx context.Context, f *FS, need int64) (waited bool, err error) {
	for {
		c.mu.Lock()
		if c.filled >= need {
			c.mu.Unlock()
			return waited, nil
		}
		if c.done {
			err := c.err
			c.mu.Unlock()
			if err == nil {
				err = errors.New("chunk ended early")
			}
			return waited, err
		}
		if c.wake == nil {
			c.wake = make(chan struct{})
		}
		wake := c.wake
		c.mu.Unlock()
		if !waited {
			f.readWaits.Add(1)
		}
		waited = true
		select {
		case <-wake:
		case <-ctx.Done():
			return waited, ctx.Err()
		}
	}
}

// copyTo copies filled bytes starting at pos into dst. The blocks below
// filled are no longer written and are released only by the readahead,
// which is the caller.
func (c *chunk) copyTo(dst []byte, pos int64) {
	for len(dst) > 0 {
		k, start, _ := c.block(pos)
		c.mu.Lock()
		buf := c.bufs[k]
		c.mu.Unlock()
		n := copy(dst, buf[pos-start:])
		dst = dst[n:]
		pos += int64(n)
	}
}

// releaseBefore gives back the blocks that end at or before pos and that
// the GET has filled; it reports whether the chunk is finished with (every
// block given back and the GET ended).
func (c *chunk) releaseBefore(f *FS, pos int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.released < len(c.bufs) {
		_, _, end := c.block(max(c.off, (c.off/blockSize+int64(c.released))*blockSize))
		if end > pos || end-c.off > c.filled {
			break
		}
		c.releaseBlockLocked(f, c.released)
		c.released++
	}
	if c.released < len(c.bufs) || !c.done {
		return false
	}
	f.mem.release(c.reserved)
	c.reserved = 0
	return true
}

// releaseBlockLocked gives block k back: to the read cache if it is on and
// the block is a whole, filled block of the object's grid (the buffer moves
// over, its budget is returned), else to the pool. Requires mu.
func (c *chunk) releaseBlockLocked(f *FS, k int) {
	b := c.bufs[k]
	if b == nil {
		return
	}
	c.bufs[k] = nil
	g := c.off/blockSize + int64(k)
	start, end := max(c.off, g*blockSize), min(c.off+c.n, (g+1)*blockSize)
	if f.cache.enabled() && end-c.off <= c.filled && cacheable(start, end, c.size) {
		f.mem.release(int64(len(b)))
		f.cache.put(c.key, c.etag, g, b[:end-start])
		return
	}
	f.bufs.put(b)
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

// buffered returns where c's data still held starts: its blocks below
// that were given back (consume). Only the readahead side changes
// c.released, and it is the caller.
func (c *chunk) buffered() int64 {
	return max(c.off, (c.off/blockSize+int64(c.released))*blockSize)
}

// nextChunk returns where the first buffered data after pos starts
// (MaxInt64 if there is none).
func (r *readahead) nextChunk(pos int64) int64 {
	for _, c := range r.chunks {
		if b := c.buffered(); b > pos && b < c.off+c.n {
			return b
		}
	}
	return math.MaxInt64
}

// chunkAt returns the chunk whose buffered data holds pos, or nil: a read
// that arrives after its block was given back is not buffered. There are
// at most a few chunks per stream, so a scan is cheap.
func (r *readahead) chunkAt(pos int64) *chunk {
	for _, c := range r.chunks {
		if pos >= c.buffered() && pos < c.off+c.n {
			return c
		}
	}
	return nil
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

// drop cancels a chunk and, once its GET has stopped, gives back its blocks
// and what is left of its reservation.
func (r *readahead) drop(c *chunk) {
	c.cancel()
	<-c.exited
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := c.released; k < len(c.bufs); k++ {
		c.releaseBlockLocked(r.fs, k)
	}
	c.released = len(c.bufs)
	r.fs.mem.release(c.reserved)
	c.reserved = 0
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
	r.setStreaming(false)
	r.reads, r.hi, r.next, r.first = 0, 0, 0, nil
}

// close releases everything; the handle is gone.
func (r *readahead) close() {
	r.reset()
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
