package fs

import (
	"context"
	"sync"
	"syscall"

	"bazil.org/fuse"
	fusefs "bazil.org/fuse/fs"
)

// fileHandle is one open file description. Content lives in the File; the
// handle owns its readahead state.
type fileHandle struct {
	f        *File
	writable bool

	mu sync.Mutex // guards ra
	ra *readahead
}

var (
	_ fusefs.Handle         = (*fileHandle)(nil)
	_ fusefs.HandleReader   = (*fileHandle)(nil)
	_ fusefs.HandleWriter   = (*fileHandle)(nil)
	_ fusefs.HandleFlusher  = (*fileHandle)(nil)
	_ fusefs.HandleReleaser = (*fileHandle)(nil)
)

func newFileHandle(f *File, writable bool) *fileHandle {
	return &fileHandle{f: f, writable: writable, ra: newReadahead(f.fs)}
}

// Read serves local content while the file is modified, else ranged GETs
// through readahead.
func (h *fileHandle) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	f := h.f
	dst := resp.Data[:req.Size]
	// Completing an upload must not be cut short by an interrupt; only the
	// wait for data below honours it (ctx.go).
	uctx, cancel := f.fs.detach(ctx, transferTimeout(f.transferSize()))
	defer cancel()
	f.mu.Lock()
	if err := f.finishStreamLocked(uctx); err != nil {
		f.mu.Unlock()
		key, _ := f.key()
		return f.fs.fail("read", key, err)
	}
	if c := f.content; c != nil {
		n, err := c.readAt(dst, req.Offset)
		f.mu.Unlock()
		if err != nil {
			key, _ := f.key()
			return f.fs.fail("read", key, err)
		}
		resp.Data = dst[:n]
		return nil
	}
	f.mu.Unlock()
	key, ok := f.key()
	if !ok {
		resp.Data = dst[:0]
		return nil
	}
	f.attrMu.Lock()
	etag, size := f.info.ETag, f.info.Size
	f.attrMu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	n, err := h.ra.read(ctx, key, etag, size, req.Offset, dst)
	if err != nil {
		return f.fs.fail("read", key, err)
	}
	resp.Data = dst[:n]
	return nil
}

// Write changes the file's content; uploading waits for flush.
func (h *fileHandle) Write(ctx context.Context, req *fuse.WriteRequest, resp *fuse.WriteResponse) error {
	if h.f.fs.opts.ReadOnly {
		return errReadOnly
	}
	f := h.f
	// A write may download the object (read-modify-write) or wait for a
	// part upload; an interrupt must not fail a streaming upload (ctx.go).
	ctx, cancel := f.fs.detach(ctx, transferTimeout(f.transferSize()+f.fs.opts.PartSize+int64(len(req.Data))))
	defer cancel()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.writeLocked(ctx, req.Offset, req.Data); err != nil {
		key, _ := f.key()
		return f.fs.fail("write", key, err)
	}
	resp.Size = len(req.Data)
	return nil
}

// Flush (every close) uploads the file's changes and returns the upload's
// error. Read-only descriptors do not upload: closing one must not cut a
// streaming upload of another descriptor short.
func (h *fileHandle) Flush(ctx context.Context, req *fuse.FlushRequest) error {
	if !h.writable {
		return nil
	}
	return h.f.flushWithErrno(ctx, "flush")
}

func (f *File) flushWithErrno(ctx context.Context, op string) error {
	ctx, cancel := f.fs.detach(ctx, transferTimeout(f.transferSize()))
	defer cancel()
	f.mu.Lock()
	defer f.mu.Unlock()
	key, _ := f.key()
	return f.fs.fail(op, key, f.flushLocked(ctx))
}

// Release (last close of the description) retries a failed upload once
// more and frees the content once no descriptor is open. Its error reaches
// no one, so failures stay dirty for FS.Flush and are logged.
func (h *fileHandle) Release(ctx context.Context, req *fuse.ReleaseRequest) error {
	h.mu.Lock()
	h.ra.close()
	h.mu.Unlock()
	f := h.f
	ctx, cancel := f.fs.detach(ctx, transferTimeout(f.transferSize()))
	defer cancel()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opens--
	if f.content != nil && f.content.dirty && h.writable {
		if err := f.flushLocked(ctx); err != nil {
			return nil // logged by flushLocked; the data stays for a later flush
		}
	}
	if f.opens == 0 && f.content != nil && !f.content.dirty {
		f.dropContentLocked()
	}
	return nil
}

var _ fusefs.HandlePoller = (*fileHandle)(nil)

// Poll answers ENOSYS so the kernel stops asking: files are always ready.
// (Go programs register even regular files with epoll, which would
// otherwise cost a request per open.)
func (h *fileHandle) Poll(ctx context.Context, req *fuse.PollRequest, resp *fuse.PollResponse) error {
	return syscall.ENOSYS
}
