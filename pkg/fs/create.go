package fs

import (
	"context"
	"errors"
	"syscall"

	"bazil.org/fuse"
	fusefs "bazil.org/fuse/fs"

	"github.com/cosmount/cosmount/pkg/cos"
)

// Creating a file: whether the store must be asked first, and what a create
// of a name the store turns out to hold does.

// absenceKnown reports whether this mount itself established that name is
// absent: a lookup's HEAD found nothing, it removed the name, or it made the
// directory (mkdir) less than EntryTTL ago. Otherwise the absence comes
// from a listing, which another client's write may have overtaken, and
// whatever creates the name must HEAD it first rather than replace it.
func (d *Dir) absenceKnown(name string) bool {
	now := d.fs.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if exp, ok := d.negative[name]; ok && now.Before(exp) {
		return true
	}
	return d.madeHere && d.complete && d.entries[name] == nil && now.Sub(d.listedAt) < d.fs.opts.EntryTTL
}

// Create makes a new, empty, dirty file; it reaches the store on flush. When
// the name's absence came from a listing, one HEAD checks that no other
// client wrote it since: if one did, Create opens that object instead (see
// openCreated), so that `>>` appends to it rather than replacing it.
func (d *Dir) Create(ctx context.Context, req *fuse.CreateRequest, resp *fuse.CreateResponse) (fusefs.Node, fusefs.Handle, error) {
	if d.fs.opts.ReadOnly {
		return nil, nil, errReadOnly
	}
	if err := checkName(req.Name); err != nil {
		return nil, nil, err
	}
	dirKey, err := d.key()
	if err != nil {
		return nil, nil, err
	}
	resp.EntryValid = d.fs.opts.EntryTTL
	if !d.absenceKnown(req.Name) {
		ctx, cancel := d.fs.detach(ctx, opTimeout)
		defer cancel()
		info, err := d.fs.store.Head(ctx, dirKey+req.Name)
		switch {
		case err == nil:
			return d.openCreated(ctx, req, dirKey+req.Name, info)
		case !errors.Is(err, cos.ErrNotFound):
			return nil, nil, d.fs.fail("create", dirKey+req.Name, err)
		}
	}
	f := newFile(d.fs, d, req.Name, d.fs.nextInode(), false)
	f.initNew(attrMeta{mode: req.Mode.Perm() &^ req.Umask.Perm(), uid: req.Uid, gid: req.Gid, mtime: d.fs.now()})
	d.attach(req.Name, f)
	d.fs.setDirty(f, true)
	d.setEntry(req.Name, &entry{kind: kindFile, info: cos.ObjectInfo{Key: dirKey + req.Name}, at: d.fs.now()})
	h := f.open(req.Flags)
	h.created = true // not yet published: f.mu is not needed
	return f, h, nil
}

// openCreated is Create of a name the store turned out to hold: O_EXCL fails
// with EEXIST; otherwise the object is opened as Open would, and emptied
// for O_TRUNC. An s3fs symlink is not followed here (the kernel follows
// links only on lookup): EEXIST, and the next lookup finds the link.
func (d *Dir) openCreated(ctx context.Context, req *fuse.CreateRequest, key string, info cos.ObjectInfo) (fusefs.Node, fusefs.Handle, error) {
	e := &entry{kind: kindFile, info: info, headed: true, at: d.fs.now()}
	if isSymlinkObject(info) {
		e.kind = kindSymlink
	}
	d.setEntry(req.Name, e)
	if req.Flags&fuse.OpenExclusive != 0 || e.kind == kindSymlink {
		return nil, nil, syscall.EEXIST
	}
	f, ok := d.nodeFor(req.Name, e).(*File)
	if !ok {
		return nil, nil, syscall.EEXIST
	}
	if req.Flags&fuse.OpenTruncate == 0 {
		return f, f.open(req.Flags), nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.truncateLocked(ctx, 0); err != nil {
		return nil, nil, d.fs.fail("truncate", key, err)
	}
	// Emptied by this open and untouched since: like a new file, its first
	// flush need not upload (fileHandle.Flush).
	f.content.fresh = true
	f.opens++
	h := newFileHandle(f, !req.Flags.IsReadOnly())
	h.created = true // not yet published
	return f, h, nil
}
