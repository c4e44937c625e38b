package fs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"bazil.org/fuse"
	fusefs "bazil.org/fuse/fs"
	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/volume"
)

// FS is the filesystem; it implements bazil's fs.FS and fs.FSStatfser.
type FS struct {
	store     ObjectStore
	opts      Options
	log       klog.Logger
	mem       *budget
	temp      *tempSpace // temporary files' space, bounded by TempLimit
	bufs      *bufPool   // readahead chunk buffers, held in mem
	now       func() time.Time
	mountTime time.Time
	inodes    atomic.Uint64

	// life ends when the filesystem stops being served. Store calls run on
	// contexts detached from the FUSE request (see detach) and bounded by it.
	life     context.Context
	shutdown context.CancelFunc

	mu    sync.Mutex         // namespace lock, a leaf; see doc.go
	root  *Dir               // immutable after New
	dirty map[*File]struct{} // guarded by mu: files with content not yet uploaded
}

var (
	_ fusefs.FS         = (*FS)(nil)
	_ fusefs.FSStatfser = (*FS)(nil)
)

// New validates opts (after filling defaults) and returns the filesystem.
func New(store ObjectStore, opts Options) (*FS, error) {
	if store == nil {
		return nil, errors.New("fs: nil object store")
	}
	opts = opts.withDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	life, shutdown := context.WithCancel(context.Background())
	f := &FS{
		opts:     opts,
		log:      opts.Logger.WithName("fs"),
		mem:      newBudget(opts.MemoryLimit),
		temp:     newTempSpace(opts.TempLimit),
		now:      time.Now,
		dirty:    map[*File]struct{}{},
		life:     life,
		shutdown: shutdown,
	}
	f.store = getObserver{ObjectStore: store, fs: f}
	f.bufs = newBufPool(f.mem, opts.PartSize, readaheadDepth(opts))
	f.mountTime = f.now()
	f.inodes.Store(1) // 1 is the root
	f.root = newDir(f, nil, "", 1)
	return f, nil
}

// Options returns the effective options (defaults filled in).
func (f *FS) Options() Options { return f.opts }

// Root returns the root directory node.
func (f *FS) Root() (fusefs.Node, error) { return f.root, nil }

// MemoryStats returns the bytes of buffer memory in use and their high-water
// mark since New; both are bounded by Options.MemoryLimit.
func (f *FS) MemoryStats() (inUse, highWater int64) { return f.mem.stats() }

// Statfs reports large, constant numbers: a bucket has no fixed capacity, and
// tools such as df and installers refuse to write to a filesystem that looks full.
func (f *FS) Statfs(ctx context.Context, req *fuse.StatfsRequest, resp *fuse.StatfsResponse) error {
	const bsize = 4096
	resp.Bsize = bsize
	resp.Frsize = bsize
	resp.Blocks = (1 << 50) / bsize // 1 PiB
	resp.Bfree = resp.Blocks
	resp.Bavail = resp.Blocks
	resp.Files = 1 << 40
	resp.Ffree = 1 << 40
	resp.Namelen = 1024 // the longest S3 key
	return nil
}

// Flush uploads every file with unsaved changes (used before unmounting, e.g.
// on SIGTERM) and returns the errors joined; each failure is also logged.
func (f *FS) Flush(ctx context.Context) error {
	f.mu.Lock()
	files := make([]*File, 0, len(f.dirty))
	for file := range f.dirty {
		files = append(files, file)
	}
	f.mu.Unlock()
	var errs []error
	for _, file := range files {
		if err := file.flush(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Pending reports the files with unsaved changes, split by whether a writer
// was told that their upload failed.
func (f *FS) Pending() volume.Pending {
	f.mu.Lock()
	files := make([]*File, 0, len(f.dirty))
	for file := range f.dirty {
		files = append(files, file)
	}
	f.mu.Unlock()
	var p volume.Pending
	for _, file := range files {
		file.attrMu.Lock()
		dirty, size, reported := file.dirty, file.contentSize, file.failReported
		file.attrMu.Unlock()
		switch {
		case !dirty:
		case reported:
			p.FailedFiles++
			p.FailedBytes += size
		default:
			p.Files++
			p.Bytes += size
		}
	}
	return p
}

func (f *FS) nextInode() uint64 { return f.inodes.Add(1) }

func (f *FS) setDirty(file *File, dirty bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if dirty {
		f.dirty[file] = struct{}{}
	} else {
		delete(f.dirty, file)
	}
}

// pathLocked returns the path of a node below the root ("" for the root), or
// false if the node or one of its ancestors was unlinked. Requires f.mu.
func (f *FS) pathLocked(n *nodeBase) (string, bool) {
	var parts []string
	for cur := n; cur != &f.root.nodeBase; cur = &cur.parent.nodeBase {
		if cur.parent == nil {
			return "", false
		}
		parts = append(parts, cur.name)
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "/"), true
}

// errReadOnly is returned by every modifying operation on a read-only mount.
var errReadOnly = syscall.EROFS

// fail logs an error with the key it concerns and returns its errno.
func (f *FS) fail(op, key string, err error) error {
	if err == nil {
		return nil
	}
	e := errno(err)
	if e != syscall.ENOENT && e != syscall.ENOTEMPTY && e != syscall.EROFS && e != syscall.EEXIST {
		f.log.Error(err, "operation failed", "op", op, "key", key, "errno", e)
	}
	return e
}

// checkName refuses names that cannot be keys of this layout.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return syscall.EINVAL
	}
	if len(name) > 1024 {
		return syscall.ENAMETOOLONG
	}
	return nil
}

func wrapKey(op, key string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s %q: %w", op, key, err)
}
