package fs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"

	"bazil.org/fuse"
	fusefs "bazil.org/fuse/fs"

	"github.com/cosmount/cosmount/pkg/cos"
)

// deleteBatch is the most keys one DeleteObjects request takes.
const deleteBatch = 1000

// Rename moves a file with a server-side copy and a delete (metadata kept),
// and a directory by moving every key below it. A directory rename is not
// atomic: see doc.go.
func (d *Dir) Rename(ctx context.Context, req *fuse.RenameRequest, newDir fusefs.Node) error {
	if d.fs.opts.ReadOnly {
		return errReadOnly
	}
	nd, ok := newDir.(*Dir)
	if !ok {
		return syscall.EXDEV
	}
	if err := checkName(req.NewName); err != nil {
		return err
	}
	ctx, cancel := d.fs.detach(ctx, longOpTimeout)
	defer cancel()
	lctx, lcancel := context.WithTimeout(ctx, opTimeout)
	src, err := d.lookup(lctx, req.OldName)
	lcancel()
	if err != nil {
		return err
	}
	srcDirKey, err := d.key()
	if err != nil {
		return err
	}
	dstDirKey, err := nd.key()
	if err != nil {
		return err
	}
	oldKey, newKey := srcDirKey+req.OldName, dstDirKey+req.NewName
	if oldKey == newKey {
		return nil
	}
	switch n := src.(type) {
	case *File:
		fctx, fcancel := context.WithTimeout(ctx, transferTimeout(n.transferSize()))
		err = d.renameFile(fctx, n, oldKey, newKey)
		fcancel()
	case *Dir:
		err = d.renameDir(ctx, nd, req.NewName, oldKey+"/", newKey+"/")
	}
	if err != nil {
		return d.fs.fail("rename", oldKey, err)
	}
	// The namespace follows: the same node now lives under the new name.
	if existing := nd.child(req.NewName); existing != nil && existing != src {
		if f, ok := existing.(*File); ok {
			f.discard()
		}
	}
	d.fs.mu.Lock()
	if d.children[req.OldName] == src {
		delete(d.children, req.OldName)
	}
	if c := nd.children[req.NewName]; c != nil && c != src {
		c.base().parent = nil
	}
	b := src.base()
	b.parent, b.name = nd, req.NewName
	nd.children[req.NewName] = src
	d.fs.mu.Unlock()

	d.mu.Lock()
	e := d.entries[req.OldName]
	delete(d.entries, req.OldName)
	d.mu.Unlock()
	d.setNegative(req.OldName)
	if e == nil {
		e = &entry{kind: src.kind()}
	}
	ne := *e
	ne.at = d.fs.now()
	if f, ok := src.(*File); ok {
		f.attrMu.Lock()
		ne.info, ne.headed = f.info, f.headed
		f.attrMu.Unlock()
	}
	nd.setEntry(req.NewName, &ne)
	return nil
}

func (d *Dir) renameFile(ctx context.Context, f *File, oldKey, newKey string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	// Pending changes go to the old key first, so the copy carries them.
	if err := f.flushLocked(ctx); err != nil {
		return err
	}
	if !f.existsInStore() {
		return nil
	}
	info, err := d.fs.store.Copy(ctx, oldKey, newKey, cos.CopyOptions{})
	if err != nil {
		return err
	}
	if err := d.fs.store.Delete(ctx, oldKey); err != nil && !errors.Is(err, cos.ErrNotFound) {
		return err
	}
	f.attrMu.Lock()
	info.Key = newKey
	if info.Metadata == nil {
		info.Metadata = f.info.Metadata
	}
	if info.Size == 0 {
		info.Size = f.info.Size
	}
	f.setInfoLocked(info, f.headed, d.fs.now())
	f.attrMu.Unlock()
	return nil
}

// renameDir copies every key below oldPrefix to newPrefix (UploadConcurrency
// copies at once), then deletes the old keys in batches.
func (d *Dir) renameDir(ctx context.Context, nd *Dir, newName, oldPrefix, newPrefix string) error {
	if strings.HasPrefix(newPrefix, oldPrefix) {
		return syscall.EINVAL // into itself
	}
	// The target may exist only if it is empty (POSIX).
	page, err := d.fs.store.List(ctx, cos.ListOptions{Prefix: newPrefix, MaxKeys: 2})
	if err != nil {
		return err
	}
	markerExisted := false
	for _, o := range page.Objects {
		if o.Key != newPrefix {
			return syscall.ENOTEMPTY
		}
		markerExisted = true
	}
	if len(page.CommonPrefixes) > 0 {
		return syscall.ENOTEMPTY
	}
	if err := d.fs.flushUnder(ctx, oldPrefix); err != nil {
		return err
	}
	var keys []string
	o := cos.ListOptions{Prefix: oldPrefix}
	for {
		page, err := d.fs.store.List(ctx, o)
		if err != nil {
			return err
		}
		for _, obj := range page.Objects {
			keys = append(keys, obj.Key)
		}
		if page.NextContinuationToken == "" {
			break
		}
		o.ContinuationToken = page.NextContinuationToken
	}
	copied, err := d.fs.copyAll(ctx, keys, oldPrefix, newPrefix)
	if err != nil {
		// Nothing under the old name was deleted yet: take the copies back,
		// so that the directory is where it was and the rename can be
		// repeated. (The target's own marker stays if it was there.)
		var undo []string
		for _, k := range copied {
			if k != newPrefix || !markerExisted {
				undo = append(undo, k)
			}
		}
		for i := 0; i < len(undo); i += deleteBatch {
			if derr := d.fs.store.DeleteMany(ctx, undo[i:min(i+deleteBatch, len(undo))]); derr != nil {
				return fmt.Errorf("%w; removing the copies made so far failed too, keys are under both names: %w", err, derr)
			}
		}
		return err
	}
	for i := 0; i < len(keys); i += deleteBatch {
		if err := d.fs.store.DeleteMany(ctx, keys[i:min(i+deleteBatch, len(keys))]); err != nil {
			// Every key is under the new name; some are left under the
			// old one too.
			return fmt.Errorf("the new directory is complete, but deleting the old keys failed: %w", err)
		}
	}
	return nil
}

// copyAll copies every key from oldPrefix to newPrefix, several at once,
// and returns the new keys it made.
func (f *FS) copyAll(ctx context.Context, keys []string, oldPrefix, newPrefix string) ([]string, error) {
	sem := make(chan struct{}, f.opts.UploadConcurrency)
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		errs   []error
		copied []string
	)
	for _, k := range keys {
		sem <- struct{}{}
		wg.Add(1)
		go func(k string) {
			defer wg.Done()
			defer func() { <-sem }()
			nk := newPrefix + strings.TrimPrefix(k, oldPrefix)
			_, err := f.store.Copy(ctx, k, nk, cos.CopyOptions{})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			copied = append(copied, nk)
		}(k)
	}
	wg.Wait()
	return copied, errors.Join(errs...)
}

// flushUnder uploads pending changes of every file below prefix.
func (f *FS) flushUnder(ctx context.Context, prefix string) error {
	f.mu.Lock()
	var files []*File
	for file := range f.dirty {
		files = append(files, file)
	}
	f.mu.Unlock()
	var errs []error
	for _, file := range files {
		if key, ok := file.key(); ok && strings.HasPrefix(key, prefix) {
			if err := file.flush(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
