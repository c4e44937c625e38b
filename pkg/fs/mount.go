package fs

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"bazil.org/fuse"
	fusefs "bazil.org/fuse/fs"

	"github.com/cosmount/cosmount/pkg/cos"
)

// Mounted is a live mount: Mount returns it, the caller ends it with
// Flush, Unmount and Wait.
type Mounted struct {
	fs         *FS
	mountpoint string
	conn       *fuse.Conn
	done       chan struct{}

	mu       sync.Mutex
	serveErr error // guarded by mu; valid once done is closed

	closeOnce sync.Once
	closeErr  error // written once by closeOnce
}

// Mount checks that the bucket (and prefix) can be listed, mounts the
// filesystem at mountpoint (through fusermount3) and serves it in the
// background until it is unmounted. ctx bounds only the setup; the mount
// lives until Unmount (or an external umount).
func Mount(ctx context.Context, mountpoint string, store ObjectStore, opts Options) (*Mounted, error) {
	fsys, err := New(store, opts)
	if err != nil {
		return nil, err
	}
	// Fail here, with the store's error, rather than on the first ls.
	if _, err := store.List(ctx, cos.ListOptions{Prefix: fsys.opts.Prefix, Delimiter: "/", MaxKeys: 1}); err != nil {
		fsys.stop()
		return nil, fmt.Errorf("cannot list the bucket (prefix %q): %w", fsys.opts.Prefix, err)
	}
	conn, err := fuse.Mount(mountpoint, fsys.mountOptions()...)
	if err != nil {
		fsys.stop()
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	m := &Mounted{fs: fsys, mountpoint: mountpoint, conn: conn, done: make(chan struct{})}
	srv := fusefs.New(conn, fsys.serveConfig())
	go func() {
		err := srv.Serve(fsys)
		fsys.stop()
		m.mu.Lock()
		m.serveErr = err
		m.mu.Unlock()
		close(m.done)
	}()
	fsys.log.Info("mounted", "mountpoint", mountpoint, "prefix", fsys.opts.Prefix, "readOnly", fsys.opts.ReadOnly)
	return m, nil
}

// mountOptions are the kernel options of the mount, each for a reason:
//   - FSName/Subtype: the mount shows as "SOURCE on /x type fuse.cosmount"
//     (SOURCE is Options.FSName, "cosmount" by default).
//   - DefaultPermissions: the kernel enforces the mode and owner we show
//     (from options or s3fs metadata); without it they would be decorative.
//   - MaxReadahead(1 MiB) and AsyncRead: the kernel asks for large reads and
//     several at once, which our readahead turns into parallel ranged GETs.
//   - AllowOther and ReadOnly only when asked.
func (f *FS) mountOptions() []fuse.MountOption {
	fsname := f.opts.FSName
	if fsname == "" {
		fsname = "cosmount"
	}
	o := []fuse.MountOption{
		fuse.FSName(fsname),
		fuse.Subtype("cosmount"),
		fuse.DefaultPermissions(),
		fuse.MaxReadahead(uint32(MiB)),
		fuse.AsyncRead(),
	}
	if f.opts.AllowOther {
		o = append(o, fuse.AllowOther())
	}
	if f.opts.ReadOnly {
		o = append(o, fuse.ReadOnly())
	}
	return o
}

// FS returns the mounted filesystem.
func (m *Mounted) FS() *FS { return m.fs }

// Mountpoint returns the directory the filesystem is mounted on.
func (m *Mounted) Mountpoint() string { return m.mountpoint }

// Flush uploads every file with unsaved changes (call it on SIGTERM, before
// Unmount). Errors are joined and each is logged with its key.
func (m *Mounted) Flush(ctx context.Context) error { return m.fs.Flush(ctx) }

// Unmount asks the kernel to unmount (fusermount3 -u). It fails with EBUSY
// while files are open; it does not wait for serving to end (see Wait).
func (m *Mounted) Unmount() error {
	select {
	case <-m.done:
		return nil
	default:
	}
	if err := fuse.Unmount(m.mountpoint); err != nil {
		return fmt.Errorf("unmount %s: %w", m.mountpoint, err)
	}
	return nil
}

// Wait blocks until the filesystem is no longer served (after Unmount or an
// external umount), closes the FUSE connection and returns the serve error.
// It may be called more than once.
func (m *Mounted) Wait() error {
	<-m.done
	m.closeOnce.Do(func() { m.closeErr = m.conn.Close() })
	m.mu.Lock()
	defer m.mu.Unlock()
	return errors.Join(m.serveErr, m.closeErr)
}

// Done is closed when serving has ended.
func (m *Mounted) Done() <-chan struct{} { return m.done }
