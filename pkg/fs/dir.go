package fs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"bazil.org/fuse"
	fusefs "bazil.org/fuse/fs"

	"github.com/cosmount/cosmount/pkg/cos"
)

// nodeBase is what every node has: its place in the namespace.
type nodeBase struct {
	fs     *FS
	inode  uint64
	parent *Dir   // guarded by fs.mu; nil for the root and for unlinked nodes
	name   string // guarded by fs.mu
}

// node is a *Dir or a *File.
type node interface {
	fusefs.Node
	base() *nodeBase
	kind() entryKind
	refresh(e *entry)
}

func (n *nodeBase) base() *nodeBase { return n }

// path returns the node's path below the root, false if it was unlinked.
func (n *nodeBase) path() (string, bool) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	return n.fs.pathLocked(n)
}

type entryKind int

const (
	kindFile entryKind = iota
	kindDir
	kindSymlink
)

// entry is what a directory knows about one name. Entries are immutable once
// stored; updates replace them.
type entry struct {
	kind   entryKind
	info   cos.ObjectInfo // files: as listed or HEADed; dirs: the marker, if known
	headed bool           // info came from HEAD and carries metadata
	// nameOnly entries come from a listing made to answer lookups: they say
	// that the name exists and its kind, but a lookup still HEADs it for
	// its attributes (metadata, symlink). Listings for readdir are used as
	// attributes, so that `ls -l` costs no HEAD per entry.
	nameOnly bool
	at       time.Time // when this was learned
}

// Dir is a directory node: implicit (a common prefix) or explicit (a marker).
type Dir struct {
	nodeBase

	mu         sync.Mutex
	entries    map[string]*entry    // guarded by mu: names known from listings and lookups
	negative   map[string]time.Time // guarded by mu: missing names and when that expires
	negPruneAt int                  // guarded by mu: sweep negative for expired names at this size
	complete   bool                 // guarded by mu: entries hold a whole listing...
	listedAt   time.Time            // guarded by mu: ...taken at this time
	largeUntil time.Time            // guarded by mu: until then, misses are probed, not listed
	listing    chan struct{}        // guarded by mu: closed when the lookup listing in flight ends
	namesOnly  bool                 // guarded by mu: the complete listing was made for lookups
	madeHere   bool                 // guarded by mu: the complete "listing" is mkdir's (known empty)
	meta       attrMeta             // guarded by mu
	hasMarker  bool                 // guarded by mu

	children map[string]node // guarded by fs.mu: live nodes by name
}

var (
	_ fusefs.Node                = (*Dir)(nil)
	_ fusefs.NodeRequestLookuper = (*Dir)(nil)
	_ fusefs.HandleReadDirAller  = (*Dir)(nil)
	_ fusefs.NodeMkdirer         = (*Dir)(nil)
	_ fusefs.NodeCreater         = (*Dir)(nil)
	_ fusefs.NodeRemover         = (*Dir)(nil)
	_ fusefs.NodeRenamer         = (*Dir)(nil)
	_ fusefs.NodeSymlinker       = (*Dir)(nil)
	_ fusefs.NodeSetattrer       = (*Dir)(nil)
	_ fusefs.NodeLinker          = (*Dir)(nil)
	_ fusefs.NodeMknoder         = (*Dir)(nil)
	_ fusefs.NodeForgetter       = (*Dir)(nil)
	_ fusefs.NodeGetxattrer      = (*Dir)(nil)
	_ fusefs.NodeListxattrer     = (*Dir)(nil)
	_ fusefs.NodeSetxattrer      = (*Dir)(nil)
	_ fusefs.NodeRemovexattrer   = (*Dir)(nil)
)

func newDir(f *FS, parent *Dir, name string, inode uint64) *Dir {
	return &Dir{
		nodeBase:   nodeBase{fs: f, inode: inode, parent: parent, name: name},
		entries:    map[string]*entry{},
		negative:   map[string]time.Time{},
		negPruneAt: minNegPrune,
		meta:       f.defaultMeta(os.ModeDir | f.opts.DirMode),
		children:   map[string]node{},
	}
}

func (f *FS) defaultMeta(mode os.FileMode) attrMeta {
	return attrMeta{mode: mode, uid: f.opts.UID, gid: f.opts.GID, mtime: f.mountTime}
}

func (d *Dir) kind() entryKind { return kindDir }

// key returns the directory's key prefix ("" or Prefix for the root, else "a/b/").
func (d *Dir) key() (string, error) {
	p, ok := d.path()
	if !ok {
		return "", syscall.ENOENT
	}
	if p == "" {
		return d.fs.opts.Prefix, nil
	}
	return d.fs.opts.Prefix + p + "/", nil
}

func (d *Dir) refresh(e *entry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e.headed {
		d.meta = metaFromObject(e.info.Metadata, e.info.LastModified, d.fs.defaultMeta(os.ModeDir|d.fs.opts.DirMode))
		d.meta.mode = os.ModeDir | d.meta.mode.Perm()
		d.hasMarker = true
	}
}

// Attr never does I/O: a directory's attributes are the mount's defaults or
// what its marker said when it was last looked up.
func (d *Dir) Attr(ctx context.Context, a *fuse.Attr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	a.Inode = d.inode
	a.Mode = d.meta.mode
	a.Uid, a.Gid = d.meta.uid, d.meta.gid
	a.Mtime, a.Ctime, a.Atime = d.meta.mtime, d.meta.mtime, d.meta.mtime
	a.Nlink = 2
	a.Size = 4096
	a.Blocks = 8
	a.BlockSize = 4096
	a.Valid = d.fs.opts.AttrTTL
	return nil
}

func (d *Dir) child(name string) node {
	d.fs.mu.Lock()
	defer d.fs.mu.Unlock()
	return d.children[name]
}

// Lookup answers from the caches when it can; otherwise it asks the store
// whether name is a file (HEAD) and a directory (LIST name/, one key) at once.
func (d *Dir) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fusefs.Node, error) {
	resp.EntryValid = d.fs.opts.EntryTTL
	ctx, cancel := d.fs.detach(ctx, opTimeout)
	defer cancel()
	n, err := d.lookup(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	return n, nil
}

func (d *Dir) lookup(ctx context.Context, name string) (node, error) {
	if err := checkName(name); err != nil {
		return nil, syscall.ENOENT
	}
	n, known, err, ok := d.cached(name)
	if ok {
		return n, err
	}
	dirKey, err := d.key()
	if err != nil {
		return nil, err
	}
	var e *entry
	if known != nil {
		e, err = d.headKnown(ctx, dirKey+name, known.kind)
	} else {
		e, err = d.probe(ctx, dirKey+name)
	}
	if errors.Is(err, cos.ErrNotFound) {
		if known == nil {
			// A miss is often followed by more (cp -r, tar x): list the
			// directory once so that they are answered from the listing.
			d.listForLookup(ctx)
		}
		d.setNegative(name) // after the listing, which keeps only newer negatives
		return nil, syscall.ENOENT
	}
	if err != nil {
		return nil, d.fs.fail("lookup", dirKey+name, err)
	}
	d.setEntry(name, e)
	if known == nil {
		// A name that exists, found by probing: list the directory once so
		// that its other names cost one HEAD each instead of HEAD + LIST.
		d.listForLookup(ctx)
	}
	return d.nodeFor(name, e), nil
}

// cached answers a lookup from what the directory knows, if it can: ok is
// false when the store must be asked, and then known is the name's fresh
// nameOnly entry, if there is one.
func (d *Dir) cached(name string) (n node, known *entry, err error, ok bool) {
	if f, isFile := d.child(name).(*File); isFile && f.isLocal() {
		return f, nil, nil, true // created here and not uploaded yet: the store cannot know it
	}
	now := d.fs.now()
	d.mu.Lock()
	e := d.entries[name]
	exp, negative := d.negative[name]
	age := now.Sub(d.listedAt)
	complete := d.complete
	d.mu.Unlock()
	if e != nil && now.Sub(e.at) < d.fs.opts.EntryTTL {
		if e.nameOnly {
			return nil, e, nil, false
		}
		return d.nodeFor(name, e), nil, nil, true
	}
	if negative && now.Before(exp) {
		return nil, nil, syscall.ENOENT, true
	}
	// A fresh complete listing without the name: it does not exist. That is
	// a negative answer, so NegativeTTL bounds it too. Another client may
	// have written the name since the listing: Create and Symlink check
	// with a HEAD before they write (absenceKnown).
	if e == nil && complete && age < d.fs.opts.EntryTTL && age < d.fs.opts.NegativeTTL {
		return nil, nil, syscall.ENOENT, true
	}
	return nil, nil, nil, false
}

// headKnown finds the attributes of a name a listing showed to exist as a
// file (HEAD) or a directory (HEAD of its marker: absent for an implicit
// directory, else it may carry s3fs metadata).
func (d *Dir) headKnown(ctx context.Context, key string, kind entryKind) (*entry, error) {
	if kind == kindDir {
		e := &entry{kind: kindDir}
		info, err := d.fs.store.Head(ctx, key+"/")
		switch {
		case err == nil:
			e.info, e.headed = info, true
		case !errors.Is(err, cos.ErrNotFound):
			return nil, err
		}
		e.at = d.fs.now()
		return e, nil
	}
	info, err := d.fs.store.Head(ctx, key)
	if err != nil {
		return nil, err
	}
	e := &entry{kind: kindFile, info: info, headed: true, at: d.fs.now()}
	if isSymlinkObject(info) {
		e.kind = kindSymlink
	}
	return e, nil
}

// probe finds out what key is. A directory (prefix "key/") wins over an object
// "key", as in s3fs, because hiding a whole subtree would be worse.
func (d *Dir) probe(ctx context.Context, key string) (*entry, error) {
	var (
		wg      sync.WaitGroup
		head    cos.ObjectInfo
		headErr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		head, headErr = d.fs.store.Head(ctx, key)
	}()
	page, listErr := d.fs.store.List(ctx, cos.ListOptions{Prefix: key + "/", MaxKeys: 1})
	wg.Wait()
	now := d.fs.now()
	if listErr != nil {
		return nil, listErr
	}
	if len(page.Objects) > 0 || len(page.CommonPrefixes) > 0 {
		e := &entry{kind: kindDir, at: now}
		if len(page.Objects) > 0 && page.Objects[0].Key == key+"/" {
			// An explicit marker may carry s3fs metadata (mode, owner).
			if info, err := d.fs.store.Head(ctx, key+"/"); err == nil {
				e.info, e.headed = info, true
			} else if !errors.Is(err, cos.ErrNotFound) {
				return nil, err
			}
		}
		return e, nil
	}
	if headErr != nil {
		return nil, headErr
	}
	e := &entry{kind: kindFile, info: head, headed: true, at: now}
	if isSymlinkObject(head) {
		e.kind = kindSymlink
	}
	return e, nil
}

func (d *Dir) setEntry(name string, e *entry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.entries[name] = e
	delete(d.negative, name)
}

func (d *Dir) setNegative(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.entries, name)
	if ttl := d.fs.opts.NegativeTTL; ttl > 0 {
		now := d.fs.now()
		if len(d.negative) >= d.negPruneAt {
			d.pruneNegativeLocked(now)
		}
		d.negative[name] = now.Add(ttl)
	}
}

// minNegPrune is the size of the negative cache below which it is not
// swept for expired names.
const minNegPrune = 64

// pruneNegativeLocked drops expired negative entries. A complete listing
// replaces the negative cache (install), but a directory larger than one
// page is never listed for lookups, so without this sweep every name ever
// missed in it would stay in memory. Sweeping when the cache has doubled
// since the last sweep keeps the cost amortized O(1) per miss and the
// cache at most twice the names missed within NegativeTTL (plus
// minNegPrune). Requires d.mu.
func (d *Dir) pruneNegativeLocked(now time.Time) {
	for name, exp := range d.negative {
		if !now.Before(exp) {
			delete(d.negative, name)
		}
	}
	d.negPruneAt = max(minNegPrune, 2*len(d.negative))
}

// nodeFor returns the live node for name, creating it if the kernel does not
// know one of that kind yet, and refreshes it from e.
func (d *Dir) nodeFor(name string, e *entry) node {
	if c := d.child(name); c != nil && c.kind() == e.kind {
		c.refresh(e)
		return c
	}
	var n node
	switch e.kind {
	case kindDir:
		n = newDir(d.fs, d, name, d.fs.nextInode())
	default:
		n = newFile(d.fs, d, name, d.fs.nextInode(), e.kind == kindSymlink)
	}
	n.refresh(e)
	d.fs.mu.Lock()
	if c := d.children[name]; c != nil {
		if c.kind() == e.kind {
			d.fs.mu.Unlock()
			c.refresh(e)
			return c
		}
		c.base().parent = nil // replaced by an entry of another kind
	}
	d.children[name] = n
	d.fs.mu.Unlock()
	return n
}

// attach makes n the live node for name, replacing (and unlinking) any other.
func (d *Dir) attach(name string, n node) {
	d.fs.mu.Lock()
	defer d.fs.mu.Unlock()
	if c := d.children[name]; c != nil && c != n {
		c.base().parent = nil
	}
	b := n.base()
	b.parent, b.name = d, name
	d.children[name] = n
}

// detach forgets name's live node (after unlink or rename away).
func (d *Dir) detach(name string, n node) {
	d.fs.mu.Lock()
	defer d.fs.mu.Unlock()
	if c := d.children[name]; c != nil && (n == nil || c == n) {
		c.base().parent = nil
		delete(d.children, name)
	}
}

// Mkdir writes a zero-byte "name/" marker with s3fs metadata.
func (d *Dir) Mkdir(ctx context.Context, req *fuse.MkdirRequest) (fusefs.Node, error) {
	if d.fs.opts.ReadOnly {
		return nil, errReadOnly
	}
	if err := checkName(req.Name); err != nil {
		return nil, err
	}
	dirKey, err := d.key()
	if err != nil {
		return nil, err
	}
	key := dirKey + req.Name + "/"
	ctx, cancel := d.fs.detach(ctx, opTimeout)
	defer cancel()
	m := attrMeta{mode: os.ModeDir | (req.Mode.Perm() &^ req.Umask.Perm()), uid: req.Uid, gid: req.Gid, mtime: d.fs.now()}
	md := m.encode(nil)
	info, err := d.fs.store.Put(ctx, key, bytes.NewReader(nil), 0, cos.PutOptions{ContentType: dirContentType, Metadata: md})
	if err != nil {
		return nil, d.fs.fail("mkdir", key, err)
	}
	info.Metadata = md
	now := d.fs.now()
	e := &entry{kind: kindDir, info: info, headed: true, at: now}
	d.setEntry(req.Name, e)
	n := d.nodeFor(req.Name, e)
	if nd, ok := n.(*Dir); ok {
		nd.markEmpty(now)
	}
	return n, nil
}

// Symlink stores the target as the object's body with mode S_IFLNK, as s3fs does.
func (d *Dir) Symlink(ctx context.Context, req *fuse.SymlinkRequest) (fusefs.Node, error) {
	if d.fs.opts.ReadOnly {
		return nil, errReadOnly
	}
	if err := checkName(req.NewName); err != nil {
		return nil, err
	}
	dirKey, err := d.key()
	if err != nil {
		return nil, err
	}
	key := dirKey + req.NewName
	ctx, cancel := d.fs.detach(ctx, opTimeout)
	defer cancel()
	if !d.absenceKnown(req.NewName) {
		// As in Create: the name may have been written since the listing.
		if _, err := d.fs.store.Head(ctx, key); err == nil {
			return nil, syscall.EEXIST
		} else if !errors.Is(err, cos.ErrNotFound) {
			return nil, d.fs.fail("symlink", key, err)
		}
	}
	md := attrMeta{mode: os.ModeSymlink | 0o777, uid: req.Uid, gid: req.Gid, mtime: d.fs.now()}.encode(nil)
	info, err := d.fs.store.Put(ctx, key, strings.NewReader(req.Target), int64(len(req.Target)), cos.PutOptions{Metadata: md})
	if err != nil {
		return nil, d.fs.fail("symlink", key, err)
	}
	info.Key, info.Size, info.Metadata = key, int64(len(req.Target)), md
	e := &entry{kind: kindSymlink, info: info, headed: true, at: d.fs.now()}
	d.setEntry(req.NewName, e)
	n := d.nodeFor(req.NewName, e)
	if f, ok := n.(*File); ok {
		f.setTarget(req.Target)
	}
	return n, nil
}

// Remove is unlink and rmdir. rmdir of a directory with any key below it
// (other than its own marker) is ENOTEMPTY.
func (d *Dir) Remove(ctx context.Context, req *fuse.RemoveRequest) error {
	if d.fs.opts.ReadOnly {
		return errReadOnly
	}
	dirKey, err := d.key()
	if err != nil {
		return err
	}
	key := dirKey + req.Name
	ctx, cancel := d.fs.detach(ctx, opTimeout)
	defer cancel()
	c := d.child(req.Name)
	if req.Dir {
		if sub, ok := c.(*Dir); ok && sub.hasLocalChildren() {
			return syscall.ENOTEMPTY
		}
		page, err := d.fs.store.List(ctx, cos.ListOptions{Prefix: key + "/", MaxKeys: 2})
		if err != nil {
			return d.fs.fail("rmdir", key+"/", err)
		}
		if len(page.CommonPrefixes) > 0 {
			return syscall.ENOTEMPTY
		}
		for _, o := range page.Objects {
			if o.Key != key+"/" {
				return syscall.ENOTEMPTY
			}
		}
		if err := d.fs.store.Delete(ctx, key+"/"); err != nil && !errors.Is(err, cos.ErrNotFound) {
			return d.fs.fail("rmdir", key+"/", err)
		}
	} else {
		var err error
		if f, ok := c.(*File); ok {
			err = f.unlink(ctx, key)
		} else if err = d.fs.store.Delete(ctx, key); errors.Is(err, cos.ErrNotFound) {
			err = nil
		}
		if err != nil {
			return d.fs.fail("unlink", key, err)
		}
	}
	d.detach(req.Name, c)
	d.setNegative(req.Name)
	return nil
}

func (d *Dir) hasLocalChildren() bool {
	d.fs.mu.Lock()
	var files []*File
	for _, c := range d.children {
		if f, ok := c.(*File); ok {
			files = append(files, f)
		}
	}
	d.fs.mu.Unlock()
	for _, f := range files {
		if f.isLocal() {
			return true
		}
	}
	return false
}

// Setattr on a directory stores mode, owner and mtime on its marker
// (creating the marker of an implicit directory).
func (d *Dir) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	if d.fs.opts.ReadOnly {
		return errReadOnly
	}
	if !(req.Valid.Mode() || req.Valid.Uid() || req.Valid.Gid() || req.Valid.Mtime()) {
		return nil
	}
	key, err := d.key()
	if err != nil {
		return err
	}
	if key == "" {
		return syscall.EPERM // the bucket root has no marker to keep attributes on
	}
	ctx, cancel := d.fs.detach(ctx, opTimeout)
	defer cancel()
	d.mu.Lock()
	m := d.meta
	d.mu.Unlock()
	applySetattr(&m, req)
	md := m.encode(nil)
	if _, err := d.fs.store.Put(ctx, key, bytes.NewReader(nil), 0, cos.PutOptions{ContentType: dirContentType, Metadata: md}); err != nil {
		return d.fs.fail("setattr", key, err)
	}
	d.mu.Lock()
	d.meta, d.hasMarker = m, true
	d.mu.Unlock()
	return nil
}

// applySetattr copies the fields a setattr request sets into m.
func applySetattr(m *attrMeta, req *fuse.SetattrRequest) {
	if req.Valid.Mode() {
		m.mode = m.mode&os.ModeType | req.Mode.Perm()
	}
	if req.Valid.Uid() {
		m.uid = req.Uid
	}
	if req.Valid.Gid() {
		m.gid = req.Gid
	}
	if req.Valid.Mtime() {
		m.mtime = req.Mtime
	}
}

// Link fails: an object store has no hard links.
func (d *Dir) Link(ctx context.Context, req *fuse.LinkRequest, old fusefs.Node) (fusefs.Node, error) {
	return nil, syscall.EPERM
}

// Mknod fails: devices, FIFOs and sockets cannot be objects.
func (d *Dir) Mknod(ctx context.Context, req *fuse.MknodRequest) (fusefs.Node, error) {
	return nil, syscall.EPERM
}

// Forget drops the node from its parent once the kernel no longer knows it.
func (d *Dir) Forget() {
	d.fs.mu.Lock()
	defer d.fs.mu.Unlock()
	if p := d.parent; p != nil && p.children[d.name] == d && len(d.children) == 0 {
		delete(p.children, d.name)
	}
}

// Extended attributes are not supported: every node (directory, file,
// symlink) answers ENOTSUP through these methods of the embedded nodeBase.
func (n *nodeBase) Getxattr(ctx context.Context, req *fuse.GetxattrRequest, resp *fuse.GetxattrResponse) error {
	return syscall.ENOTSUP
}

// Listxattr: see Getxattr.
func (n *nodeBase) Listxattr(ctx context.Context, req *fuse.ListxattrRequest, resp *fuse.ListxattrResponse) error {
	return syscall.ENOTSUP
}

// Setxattr: see Getxattr.
func (n *nodeBase) Setxattr(ctx context.Context, req *fuse.SetxattrRequest) error {
	return syscall.ENOTSUP
}

// Removexattr: see Getxattr.
func (n *nodeBase) Removexattr(ctx context.Context, req *fuse.RemovexattrRequest) error {
	return syscall.ENOTSUP
}
