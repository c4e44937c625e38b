package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"bazil.org/fuse"
	fusefs "bazil.org/fuse/fs"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/volume"
)

// File is a regular file or a symlink node. While the file is being
// modified it owns the new content; otherwise reads go to the store.
type File struct {
	nodeBase
	symlink bool // immutable

	mu      sync.Mutex
	content *content // guarded by mu; nil when the store holds the truth
	opens   int      // guarded by mu: open handles

	attrMu      sync.Mutex
	info        cos.ObjectInfo // guarded by attrMu: the object as last seen
	headed      bool           // guarded by attrMu: info carries metadata
	exists      bool           // guarded by attrMu: the object is in the store
	meta        attrMeta       // guarded by attrMu
	fetchedAt   time.Time      // guarded by attrMu
	hasContent  bool           // guarded by attrMu: mirrors content != nil
	dirty       bool           // guarded by attrMu: mirrors content.dirty
	contentSize int64          // guarded by attrMu: mirrors content.size
	// failReported: the last upload of the current changes failed and a
	// writer was told (close or fsync returned the error). Cleared by new
	// changes and by a successful upload. Guarded by attrMu.
	failReported bool
	// refused: that failure was the store refusing the identity
	// (AccessDenied), which no immediate retry changes. Guarded by attrMu.
	refused      bool
	lastOpenETag string // guarded by attrMu
	target       string // guarded by attrMu: symlink target, once read
}

var (
	_ fusefs.Node              = (*File)(nil)
	_ fusefs.NodeOpener        = (*File)(nil)
	_ fusefs.NodeSetattrer     = (*File)(nil)
	_ fusefs.NodeFsyncer       = (*File)(nil)
	_ fusefs.NodeReadlinker    = (*File)(nil)
	_ fusefs.NodeForgetter     = (*File)(nil)
	_ fusefs.NodeGetxattrer    = (*File)(nil)
	_ fusefs.NodeListxattrer   = (*File)(nil)
	_ fusefs.NodeSetxattrer    = (*File)(nil)
	_ fusefs.NodeRemovexattrer = (*File)(nil)
)

func newFile(f *FS, parent *Dir, name string, inode uint64, symlink bool) *File {
	mode := f.opts.FileMode
	if symlink {
		mode = os.ModeSymlink | 0o777
	}
	return &File{
		nodeBase: nodeBase{fs: f, inode: inode, parent: parent, name: name},
		symlink:  symlink,
		meta:     f.defaultMeta(mode),
	}
}

func (f *File) kind() entryKind {
	if f.symlink {
		return kindSymlink
	}
	return kindFile
}

// key returns the object key, false if the file was unlinked.
func (f *File) key() (string, bool) {
	p, ok := f.path()
	return f.fs.opts.Prefix + p, ok
}

func (f *File) nameNow() (string, *Dir) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	return f.name, f.parent
}

// initNew makes a just-created file: empty, dirty, not in the store.
func (f *File) initNew(m attrMeta) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.content = newMemContent()
	f.content.dirty = true
	f.content.fresh = true
	f.attrMu.Lock()
	f.meta = m
	f.fetchedAt = f.fs.now()
	f.attrMu.Unlock()
	f.syncAttrLocked()
}

// syncAttrLocked mirrors the content state into the attribute fields so
// that Attr does not need f.mu. Requires f.mu.
func (f *File) syncAttrLocked() {
	f.attrMu.Lock()
	defer f.attrMu.Unlock()
	c := f.content
	f.hasContent = c != nil
	f.dirty = c != nil && c.dirty
	if !f.dirty {
		f.failReported = false
	}
	if c != nil {
		f.contentSize = c.size
	}
}

// isLocal reports whether the file has changes the store does not have.
func (f *File) isLocal() bool {
	f.attrMu.Lock()
	defer f.attrMu.Unlock()
	return f.dirty
}

func (f *File) existsInStore() bool {
	f.attrMu.Lock()
	defer f.attrMu.Unlock()
	return f.exists
}

func (f *File) setTarget(t string) {
	f.attrMu.Lock()
	defer f.attrMu.Unlock()
	f.target = t
}

// refresh takes attributes from a listing or a HEAD, unless local changes
// are newer. A listing (no metadata) of the same ETag keeps known metadata.
func (f *File) refresh(e *entry) {
	f.attrMu.Lock()
	defer f.attrMu.Unlock()
	f.setInfoLocked(e.info, e.headed, e.at)
}

// setInfoLocked requires attrMu.
func (f *File) setInfoLocked(info cos.ObjectInfo, headed bool, at time.Time) {
	if f.dirty {
		return
	}
	f.exists = true
	f.fetchedAt = at
	if !headed && f.headed && info.ETag == f.info.ETag {
		return
	}
	if f.info.ETag != info.ETag {
		f.target = ""
	}
	f.info, f.headed = info, headed
	def := f.fs.defaultMeta(f.fs.opts.FileMode)
	if f.symlink {
		def.mode = os.ModeSymlink | 0o777
	}
	f.meta = metaFromObject(info.Metadata, info.LastModified, def)
	if f.symlink {
		f.meta.mode = os.ModeSymlink | f.meta.mode.Perm()
	} else {
		f.meta.mode = f.meta.mode.Perm()
	}
}

// revalidate HEADs the object when its attributes are older than AttrTTL
// and the file has no local content.
func (f *File) revalidate(ctx context.Context) error {
	if !f.attrsStale() {
		return nil
	}
	key, ok := f.key()
	if !ok {
		return nil
	}
	info, err := f.fs.store.Head(ctx, key)
	if err != nil {
		if errors.Is(err, cos.ErrNotFound) {
			f.attrMu.Lock()
			f.exists = false
			f.attrMu.Unlock()
		}
		return err
	}
	f.attrMu.Lock()
	f.setInfoLocked(info, true, f.fs.now())
	f.attrMu.Unlock()
	return nil
}

// needMetadata HEADs an existing object whose attributes came from a
// listing (no metadata) before a change is uploaded over it.
func (f *File) needMetadata(ctx context.Context) error {
	f.attrMu.Lock()
	need := f.exists && !f.headed && !f.hasContent
	f.attrMu.Unlock()
	if !need {
		return nil
	}
	key, ok := f.key()
	if !ok {
		return nil
	}
	return f.revalidateNow(ctx, key)
}

// Attr reports the local size while the file is being modified, and
// otherwise the object's, revalidated after AttrTTL.
func (f *File) Attr(ctx context.Context, a *fuse.Attr) error {
	ctx, cancel := f.fs.detach(ctx, opTimeout)
	defer cancel()
	if err := f.revalidate(ctx); err != nil {
		key, _ := f.key()
		return f.fs.fail("getattr", key, err)
	}
	f.attrMu.Lock()
	defer f.attrMu.Unlock()
	size := f.info.Size
	if f.hasContent {
		size = f.contentSize
	}
	a.Inode = f.inode
	a.Size = uint64(size)
	a.Blocks = (uint64(size) + 511) / 512
	a.BlockSize = 4096
	a.Mode = f.meta.mode
	a.Uid, a.Gid = f.meta.uid, f.meta.gid
	a.Mtime, a.Ctime, a.Atime = f.meta.mtime, f.meta.mtime, f.meta.mtime
	a.Nlink = 1
	a.Valid = f.fs.opts.AttrTTL
	return nil
}

// Open revalidates the attributes and keeps the kernel's page cache when
// the ETag is the one the previous open saw (the data cannot have changed).
func (f *File) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fusefs.Handle, error) {
	if !req.Flags.IsReadOnly() && f.fs.opts.ReadOnly {
		return nil, errReadOnly
	}
	ctx, cancel := f.fs.detach(ctx, opTimeout)
	defer cancel()
	if err := f.revalidate(ctx); err != nil {
		key, _ := f.key()
		return nil, f.fs.fail("open", key, err)
	}
	if !req.Flags.IsReadOnly() {
		// The upload on close writes mode, owner and mtime: they must be
		// the object's, not a listing's defaults.
		if err := f.needMetadata(ctx); err != nil {
			key, _ := f.key()
			return nil, f.fs.fail("open", key, err)
		}
	}
	f.attrMu.Lock()
	if !f.hasContent && f.info.ETag != "" {
		if f.info.ETag == f.lastOpenETag {
			resp.Flags |= fuse.OpenKeepCache
		}
		f.lastOpenETag = f.info.ETag
	}
	f.attrMu.Unlock()
	return f.open(req.Flags), nil
}

func (f *File) open(flags fuse.OpenFlags) *fileHandle {
	f.mu.Lock()
	f.opens++
	f.mu.Unlock()
	return newFileHandle(f, !flags.IsReadOnly())
}

// Setattr handles truncate (size 0 makes an empty object; other sizes go
// through read-modify-write) and chmod/chown/utimes, which are stored as
// s3fs metadata with a server-side copy onto the same key.
func (f *File) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	v := req.Valid
	if !(v.Size() || v.Mode() || v.Uid() || v.Gid() || v.Mtime()) {
		return nil // atime only: not stored
	}
	if f.fs.opts.ReadOnly {
		return errReadOnly
	}
	key, ok := f.key()
	ctx, cancel := f.fs.detach(ctx, transferTimeout(max(f.transferSize(), int64(req.Size))))
	defer cancel()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.needMetadata(ctx); err != nil {
		return f.fs.fail("setattr", key, err)
	}
	if v.Size() {
		if err := f.truncateLocked(ctx, int64(req.Size)); err != nil {
			return f.fs.fail("truncate", key, err)
		}
	}
	f.attrMu.Lock()
	applySetattr(&f.meta, req)
	if f.symlink {
		f.meta.mode = os.ModeSymlink | f.meta.mode.Perm()
	}
	dirty, exists, headed := f.dirty, f.exists, f.headed
	f.attrMu.Unlock()
	if f.content != nil {
		f.content.fresh = false // touch(1): its close must upload (fileHandle.Flush)
	}
	if dirty {
		if f.opens > 0 && req.Valid.Handle() {
			return nil // uploaded, with the new metadata, on that descriptor's flush
		}
		// By path (truncate, chmod): the caller has no descriptor to flush
		// later. A descriptor closed just before may still be counted in
		// opens, as the kernel releases it after close returns.
		return f.fs.fail("setattr", key, f.flushLocked(ctx))
	}
	if !exists || !ok {
		return nil
	}
	if !headed {
		if err := f.revalidateNow(ctx, key); err != nil {
			return f.fs.fail("setattr", key, err)
		}
	}
	f.attrMu.Lock()
	md := f.meta.encode(f.info.Metadata)
	ct, etag := f.info.ContentType, f.info.ETag
	f.attrMu.Unlock()
	info, err := f.fs.store.Copy(ctx, key, key, cos.CopyOptions{ReplaceMetadata: true, Metadata: md, ContentType: ct, IfMatch: etag})
	if err != nil {
		return f.fs.fail("setattr", key, err)
	}
	info.Metadata, info.ContentType = md, ct
	f.attrMu.Lock()
	f.setInfoLocked(info, true, f.fs.now())
	f.attrMu.Unlock()
	return nil
}

func (f *File) revalidateNow(ctx context.Context, key string) error {
	info, err := f.fs.store.Head(ctx, key)
	if err != nil {
		return err
	}
	f.attrMu.Lock()
	f.setInfoLocked(info, true, f.fs.now())
	f.attrMu.Unlock()
	return nil
}

// Fsync uploads pending changes.
func (f *File) Fsync(ctx context.Context, req *fuse.FsyncRequest) error {
	ctx, cancel := f.fs.detach(ctx, transferTimeout(f.transferSize()))
	defer cancel()
	f.mu.Lock()
	defer f.mu.Unlock()
	key, _ := f.key()
	// A new file still in memory but big enough to be a part is saved as
	// a multipart upload, so that the writes after this fsync continue
	// the object server-side (appendStreamLocked) instead of every later
	// fsync uploading the whole file again.
	if c := f.content; c != nil && c.dirty && c.kind == inMemory && c.size >= volume.MinPartSize {
		if err := f.startStreamLocked(ctx); err != nil {
			return f.fs.fail("fsync", key, f.reportedLocked(err))
		}
	}
	return f.fs.fail("fsync", key, f.reportedLocked(f.flushLocked(ctx)))
}

// reportedLocked notes that err, the result of an upload, is returned to a
// writer: the file's unsaved changes then no longer hold up an unpublish
// (see FS.Pending). Requires f.mu.
func (f *File) reportedLocked(err error) error {
	if err != nil {
		f.attrMu.Lock()
		f.failReported = f.dirty
		f.refused = f.dirty && errors.Is(err, cos.ErrAccessDenied)
		f.attrMu.Unlock()
	}
	return err
}

// refusedLocked reports whether the current changes were refused by the
// store and the writer was told. Requires f.mu.
func (f *File) refusedLocked() bool {
	f.attrMu.Lock()
	defer f.attrMu.Unlock()
	return f.failReported && f.refused
}

// Readlink returns an s3fs symlink's target (the object's body).
func (f *File) Readlink(ctx context.Context, req *fuse.ReadlinkRequest) (string, error) {
	if !f.symlink {
		return "", syscall.EINVAL
	}
	f.attrMu.Lock()
	t := f.target
	f.attrMu.Unlock()
	if t != "" {
		return t, nil
	}
	key, ok := f.key()
	if !ok {
		return "", syscall.ENOENT
	}
	ctx, cancel := f.fs.detach(ctx, opTimeout)
	defer cancel()
	rc, _, err := f.fs.store.Get(ctx, key, cos.GetOptions{})
	if err != nil {
		return "", f.fs.fail("readlink", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxSymlinkTarget+1))
	if err != nil {
		return "", f.fs.fail("readlink", key, err)
	}
	target, err := symlinkTarget(b)
	if err != nil {
		return "", f.fs.fail("readlink", key, err)
	}
	f.setTarget(target)
	return target, nil
}

// maxSymlinkTarget is the longest target the kernel takes (PATH_MAX less
// the terminating NUL).
const maxSymlinkTarget = 4095

// errBadSymlink is an s3fs symlink object whose body cannot be a target.
var errBadSymlink = errors.New("symlink object's body is not a link target")

// symlinkTarget checks the body of an s3fs symlink object (written by any
// client): the target must be non-empty, at most maxSymlinkTarget bytes and
// free of NUL bytes. A longer body is refused rather than cut short, which
// would point the link somewhere else.
func symlinkTarget(body []byte) (string, error) {
	switch {
	case len(body) == 0:
		return "", fmt.Errorf("%w: empty", errBadSymlink)
	case len(body) > maxSymlinkTarget:
		return "", fmt.Errorf("%w: longer than %d bytes", errBadSymlink, maxSymlinkTarget)
	case bytes.IndexByte(body, 0) >= 0:
		return "", fmt.Errorf("%w: contains a NUL byte", errBadSymlink)
	}
	return string(body), nil
}

// Forget drops an idle node from its parent.
func (f *File) Forget() {
	f.mu.Lock()
	busy := f.opens > 0 || f.content != nil
	f.mu.Unlock()
	if busy {
		return
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if p := f.parent; p != nil && p.children[f.name] == f {
		delete(p.children, f.name)
	}
}

// unlink deletes the object (if the store has it) and then drops the local
// content: an unlinked file's data vanishes, as it would once the last
// descriptor closes. f.mu is held across the delete so that no flush of an
// open descriptor uploads the file again meanwhile. When the delete fails
// the file keeps its content and stays dirty, so nothing the application
// wrote is lost to an unlink that did not happen.
func (f *File) unlink(ctx context.Context, key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.existsInStore() {
		if err := f.fs.store.Delete(ctx, key); err != nil && !errors.Is(err, cos.ErrNotFound) {
			return err
		}
	}
	f.dropContentLocked()
	f.attrMu.Lock()
	f.exists = false
	f.attrMu.Unlock()
	f.fs.setDirty(f, false)
	return nil
}

// discard drops local content of a file that another file was renamed
// over: the rename replaced the object, and the old data vanishes.
func (f *File) discard() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dropContentLocked()
	f.attrMu.Lock()
	f.exists = false
	f.attrMu.Unlock()
	f.fs.setDirty(f, false)
}
