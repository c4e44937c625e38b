package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/volume"
)

type contentKind int

const (
	inMemory  contentKind = iota // a new file written sequentially, below the multipart threshold
	inTemp                       // random writes and read-modify-write: a temporary file
	streaming                    // a new sequential file above the threshold: multipart in flight
)

// content is a file's data while it differs from (or is about to replace)
// the object. It belongs to its File and is guarded by File.mu.
type content struct {
	kind   contentKind
	buf    []byte // inMemory: the data, len(buf) == size
	budget int64  // inMemory: bytes of the memory budget held for buf
	file   *os.File
	stream *streamUpload
	size   int64
	dirty  bool
	// fresh: a file created by this mount that nothing has written,
	// truncated or changed the attributes of yet (see fileHandle.Flush).
	fresh bool

	// temp accounts file's space (temp_limit); tempReserved is this
	// content's share of it.
	temp         *tempSpace
	tempReserved int64
}

func newMemContent() *content { return &content{kind: inMemory} }

// release gives back memory and removes the temporary file.
func (c *content) release(b *budget) {
	if c.stream != nil {
		c.stream.abort()
		c.stream = nil
	}
	if c.file != nil {
		name := c.file.Name()
		_ = c.file.Close()
		_ = os.Remove(name)
		c.file = nil
		_ = c.temp.resize(c, 0)
	}
	b.release(c.budget)
	c.buf, c.budget = nil, 0
}

func (c *content) readAt(dst []byte, off int64) (int, error) {
	if off >= c.size {
		return 0, nil
	}
	if int64(len(dst)) > c.size-off {
		dst = dst[:c.size-off]
	}
	switch c.kind {
	case inMemory:
		return copy(dst, c.buf[off:]), nil
	case inTemp:
		n, err := c.file.ReadAt(dst, off)
		if errors.Is(err, io.EOF) {
			err = nil
		}
		return n, err
	}
	return 0, errors.New("fs: read of a streaming upload")
}

func (f *File) dropContentLocked() {
	if f.content != nil {
		f.content.release(f.fs.mem)
		f.content = nil
	}
	f.syncAttrLocked()
}

// reserve is what opportunistic buffers must leave free: one part being
// filled and one in flight keep every streaming writer moving.
func (f *FS) reserve() int64 { return 2 * f.opts.PartSize }

// loadLocked prepares content for modifying an existing file: nothing to
// download for an empty or absent object, else the object is copied into a
// temporary file (read-modify-write). Requires f.mu.
func (f *File) loadLocked(ctx context.Context) error {
	if f.content != nil {
		return nil
	}
	f.attrMu.Lock()
	exists, size, etag := f.exists, f.info.Size, f.info.ETag
	f.attrMu.Unlock()
	if !exists || size == 0 {
		f.content = newMemContent()
		f.syncAttrLocked()
		return nil
	}
	key, ok := f.key()
	if !ok {
		return errUnlinked
	}
	c, err := f.fs.newTempContent()
	if err != nil {
		return err
	}
	// An object larger than the volume's temporary space is refused before
	// it is downloaded.
	if err := c.temp.resize(c, size); err != nil {
		c.release(f.fs.mem)
		return err
	}
	rc, info, err := f.fs.store.Get(ctx, key, cos.GetOptions{IfMatch: etag})
	if err != nil {
		c.release(f.fs.mem)
		return err
	}
	n, err := io.Copy(&reservingWriter{c: c}, rc)
	rc.Close()
	if err != nil {
		c.release(f.fs.mem)
		return fmt.Errorf("download %q: %w", key, err)
	}
	c.size = n
	f.content = c
	// GET returns the metadata, which the upload must keep.
	f.attrMu.Lock()
	if info.Metadata != nil {
		f.info.Metadata, f.info.ContentType, f.headed = info.Metadata, info.ContentType, true
	}
	f.attrMu.Unlock()
	f.syncAttrLocked()
	return nil
}

var errUnlinked = errors.New("file was unlinked")

func (f *FS) newTempContent() (*content, error) {
	tf, err := os.CreateTemp(f.opts.TempDir, "cosmount-*")
	if err != nil {
		return nil, fmt.Errorf("temporary file: %w", err)
	}
	return &content{kind: inTemp, file: tf, temp: f.temp}, nil
}

// spillLocked moves in-memory content to a temporary file.
func (f *File) spillLocked() error {
	c := f.content
	if c.kind != inMemory {
		return nil
	}
	t, err := f.fs.newTempContent()
	if err != nil {
		return err
	}
	if err := t.temp.resize(t, c.size); err != nil {
		t.release(f.fs.mem)
		return err
	}
	if _, err := t.file.WriteAt(c.buf, 0); err != nil {
		t.release(f.fs.mem)
		return fmt.Errorf("temporary file: %w", err)
	}
	t.size, t.dirty = c.size, c.dirty
	c.release(f.fs.mem)
	f.content = t
	return nil
}

// finishStreamLocked completes a streaming upload so that the file can be
// read or modified other than by appending.
func (f *File) finishStreamLocked(ctx context.Context) error {
	if f.content == nil || f.content.kind != streaming {
		return nil
	}
	return f.flushLocked(ctx)
}

// writeLocked writes data at off. Requires f.mu.
func (f *File) writeLocked(ctx context.Context, off int64, data []byte) error {
	if c := f.content; c != nil && c.kind == streaming && off != c.size {
		if err := f.finishStreamLocked(ctx); err != nil {
			return err
		}
	}
	if f.content == nil {
		if err := f.appendStreamLocked(ctx, off); err != nil {
			return err
		}
	}
	if err := f.loadLocked(ctx); err != nil {
		return err
	}
	c := f.content
	end := off + int64(len(data))
	switch c.kind {
	case streaming:
		if err := c.stream.write(ctx, data); err != nil {
			return err
		}
		c.size = end
	case inMemory:
		if off > c.size {
			// A gap: leave memory for a sparse temporary file.
			if err := f.spillLocked(); err != nil {
				return err
			}
			return f.writeLocked(ctx, off, data)
		}
		if end >= f.fs.opts.MultipartThreshold && off == c.size {
			if err := f.startStreamLocked(ctx); err != nil {
				return err
			}
			return f.writeLocked(ctx, off, data)
		}
		if end > int64(cap(c.buf)) && !f.growLocked(end) {
			if err := f.spillLocked(); err != nil {
				return err
			}
			return f.writeLocked(ctx, off, data)
		}
		if end > c.size {
			c.buf = c.buf[:end]
			c.size = end
		}
		copy(c.buf[off:], data)
	case inTemp:
		if err := c.temp.grow(c, end); err != nil {
			return err
		}
		if _, err := c.file.WriteAt(data, off); err != nil {
			return fmt.Errorf("temporary file: %w", err)
		}
		if end > c.size {
			c.size = end
		}
	}
	f.markDirtyLocked()
	return nil
}

// growLocked enlarges the memory buffer (doubling) if the budget allows.
func (f *File) growLocked(need int64) bool {
	c := f.content
	newCap := int64(cap(c.buf)) * 2
	if newCap < 64*KiB {
		newCap = 64 * KiB
	}
	for newCap < need {
		newCap *= 2
	}
	if limit := f.fs.opts.MultipartThreshold; newCap > limit && need <= limit {
		newCap = limit
	}
	delta := newCap - c.budget
	if !f.fs.mem.tryAcquire(delta, f.fs.reserve()) {
		return false
	}
	nb := make([]byte, c.size, newCap)
	copy(nb, c.buf)
	c.buf = nb
	c.budget += delta
	return true
}

func (f *File) markDirtyLocked() {
	f.content.dirty = true
	f.content.fresh = false
	f.attrMu.Lock()
	f.meta.mtime = f.fs.now()
	f.failReported = false // new changes no writer has heard about
	f.attrMu.Unlock()
	f.syncAttrLocked()
	f.fs.setDirty(f, true)
}

// truncateLocked sets the size. Requires f.mu.
func (f *File) truncateLocked(ctx context.Context, size int64) error {
	if size == 0 {
		f.dropContentLocked()
		f.content = newMemContent()
		f.markDirtyLocked()
		return nil
	}
	if f.content == nil {
		f.attrMu.Lock()
		same := f.exists && f.info.Size == size
		f.attrMu.Unlock()
		if same {
			return nil
		}
	}
	if err := f.finishStreamLocked(ctx); err != nil {
		return err
	}
	if err := f.loadLocked(ctx); err != nil {
		return err
	}
	c := f.content
	switch {
	case c.kind == inMemory && size <= c.size:
		c.buf = c.buf[:size]
	case c.kind == inMemory && (size <= int64(cap(c.buf)) || f.growLocked(size)):
		clear(c.buf[c.size:size])
		c.buf = c.buf[:size]
	default:
		if err := f.spillLocked(); err != nil {
			return err
		}
		if err := f.content.temp.resize(f.content, size); err != nil {
			return err
		}
		if err := f.content.file.Truncate(size); err != nil {
			return fmt.Errorf("temporary file: %w", err)
		}
	}
	f.content.size = size
	f.markDirtyLocked()
	return nil
}

// flushLocked uploads dirty content; it does nothing when nothing changed,
// so several flushes of dup'd descriptors upload once. On failure the
// content stays dirty (except a streaming upload, whose parts are gone), the
// key is logged and the error returned. Requires f.mu.
func (f *File) flushLocked(ctx context.Context) error {
	c := f.content
	if c == nil || !c.dirty {
		return nil
	}
	key, ok := f.key()
	if !ok {
		f.dropContentLocked()
		f.fs.setDirty(f, false)
		return nil
	}
	f.attrMu.Lock()
	var existing map[string]string
	if f.headed {
		existing = f.info.Metadata
	}
	md := f.meta.encode(existing)
	ct := f.info.ContentType
	f.attrMu.Unlock()

	var info cos.ObjectInfo
	var err error
	switch c.kind {
	case inMemory:
		info, err = f.fs.store.Put(ctx, key, bytes.NewReader(c.buf), c.size, cos.PutOptions{ContentType: ct, Metadata: md})
	case inTemp:
		info, err = f.fs.uploadFile(ctx, key, c.file, c.size, cos.PutOptions{ContentType: ct, Metadata: md})
	case streaming:
		md = c.stream.metadata
		info, err = c.stream.finish(ctx)
		c.stream = nil
		if err != nil {
			// The parts are gone with the aborted upload: report, then forget.
			f.dropContentLocked()
			f.fs.setDirty(f, false)
		}
	}
	if err != nil {
		f.fs.log.Error(err, "upload failed", "key", key, "size", c.size)
		return err
	}
	c.dirty = false
	size := c.size
	if c.kind == streaming || f.opens == 0 {
		f.dropContentLocked()
	}
	f.syncAttrLocked()
	f.fs.setDirty(f, false)
	now := f.fs.now()
	info.Key, info.Size, info.Metadata, info.ContentType = key, size, md, ct
	if info.LastModified.IsZero() {
		info.LastModified = now
	}
	f.attrMu.Lock()
	f.setInfoLocked(info, true, now)
	f.attrMu.Unlock()
	if name, parent := f.nameNow(); parent != nil {
		parent.setEntry(name, &entry{kind: f.kind(), info: info, headed: true, at: now})
	}
	return nil
}

// flush is flushLocked for callers without f.mu.
func (f *File) flush(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.flushLocked(ctx)
}

// startStreamLocked turns an in-memory new file into a streaming multipart
// upload, handing the buffer's full parts to the uploader without copying.
func (f *File) startStreamLocked(ctx context.Context) error {
	c := f.content
	key, ok := f.key()
	if !ok {
		return errUnlinked
	}
	f.attrMu.Lock()
	md := f.meta.encode(nil)
	ct := f.info.ContentType
	f.attrMu.Unlock()
	s, err := f.fs.startStream(ctx, key, cos.PutOptions{ContentType: ct, Metadata: md})
	if err != nil {
		return err
	}
	if err := s.adopt(ctx, c.buf, c.budget); err != nil {
		s.abort()
		return err
	}
	f.content = &content{kind: streaming, stream: s, size: c.size, dirty: true}
	f.syncAttrLocked()
	return nil
}

// appendStreamLocked starts a streaming upload that continues the object
// when a write appends to it (off is its size) and it is large enough to
// be the first part(s) of a multipart upload: the object's bytes become
// those parts by UploadPartCopy, server-side, and the new data streams
// after them. Without it an append would download the whole object
// (read-modify-write), and a file written with fsync every N MiB would
// move its size again at every fsync: each fsync completes the upload
// (the object is then durable) and the next write continues it here, so
// the file crosses the network about once in all. The copy requires the
// ETag this mount last saw (another writer's object is ESTALE, not
// overwritten). It does nothing (content stays nil) when the object is
// unsuitable. Requires f.mu.
func (f *File) appendStreamLocked(ctx context.Context, off int64) error {
	if f.symlink {
		return nil
	}
	f.attrMu.Lock()
	ok := f.exists && f.headed && !f.dirty && f.info.ETag != "" && off == f.info.Size && f.info.Size >= volume.MinPartSize
	size, etag, ct := f.info.Size, f.info.ETag, f.info.ContentType
	md := f.meta.encode(f.info.Metadata)
	f.attrMu.Unlock()
	if !ok {
		return nil
	}
	key, ok := f.key()
	if !ok {
		return errUnlinked
	}
	s, err := f.fs.startStream(ctx, key, cos.PutOptions{ContentType: ct, Metadata: md})
	if err != nil {
		return err
	}
	if err := s.copyObject(ctx, size, etag); err != nil {
		s.abort()
		return err
	}
	f.content = &content{kind: streaming, stream: s, size: size}
	f.syncAttrLocked()
	return nil
}
