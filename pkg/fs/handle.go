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
	// created: this open made the file (Create). deferred: its first flush
	// found the file still fresh and left the empty upload to a later
	// flush or to release. Both guarded by f.mu.
	created  bool
	deferred bool

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
//
// One exception saves a PUT: the first flush of the open that created the
// file, while nothing has been written to it and its attributes are
// unchanged. A shell redirection (`echo hi > f`) opens f, dup2()s it to
// stdout and closes the original descriptor before echo writes: uploading
// the empty file then would be followed by a second PUT with the data.
// FUSE does not say whether other descriptors remain, so the empty object
// is left to the next flush (which uploads whatever the file holds then
// and returns its error to close) or to release. A file that is created
// and closed without a write or a setattr (`: > f`, busybox touch) is
// therefore uploaded on release, which the kernel does not wait for: it
// reaches the bucket just after close returns, and an error is logged
// (the file stays dirty for FS.Flush), not returned. GNU touch sets the
// times (a setattr) before it closes, so its file is in the bucket when
// it exits. Every file with data is uploaded before its close returns.
func (h *fileHandle) Flush(ctx context.Context, req *fuse.FlushRequest) error {
	if !h.writable {
		return nil
	}
	f := h.f
	ctx, cancel := f.fs.detach(ctx, transferTimeout(f.transferSize()))
	defer cancel()
	f.mu.Lock()
	defer f.mu.Unlock()
	if h.created && !h.deferred && f.content != nil && f.content.fresh {
		h.deferred = true
		return nil
	}
	key, _ := f.key()
	return f.fs.fail("flush", key, f.reportedLocked(f.flushLocked(ctx)))
}

// Release (last close of the description) retries a failed upload once
// more (not one the store refused with AccessDenied) and frees the content
// once no descriptor is open. Its error reaches
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
	// A retry of an upload the store refused (AccessDenied, already
	// returned to the writer) would only be refused again: it waits for a
	// later flush, which a changed policy or credential may let through.
	if f.content != nil && f.content.dirty && h.writable && !f.refusedLocked() {
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
