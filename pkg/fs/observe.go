package fs

import (
	"context"
	"io"
	"strings"

	"github.com/cosmount/cosmount/pkg/cos"
)

// getObserver is the store as the filesystem uses it: every successful GET
// (readahead, read-modify-write, readlink) also tells the file's node the
// object's metadata, which the response carries anyway. After a listing,
// which has no metadata, the first read of a file thus corrects its mode,
// owner and mtime without a HEAD.
type getObserver struct {
	ObjectStore
	fs *FS
}

func (s getObserver) Get(ctx context.Context, key string, o cos.GetOptions) (io.ReadCloser, cos.ObjectInfo, error) {
	rc, info, err := s.ObjectStore.Get(ctx, key, o)
	if err == nil {
		s.fs.learn(key, info)
	}
	return rc, info, err
}

// learn refreshes the attributes of key's live file node from a GET of the
// same object version (same ETag); other nodes and versions are left alone.
func (f *FS) learn(key string, info cos.ObjectInfo) {
	if info.ETag == "" || info.Metadata == nil {
		return
	}
	file := f.liveFile(key)
	if file == nil {
		return
	}
	file.attrMu.Lock()
	defer file.attrMu.Unlock()
	if !file.exists || file.info.ETag != info.ETag {
		return
	}
	// Same ETag, same bytes: keep the size already known, whatever range
	// this GET covered.
	info.Key, info.Size = key, file.info.Size
	file.setInfoLocked(info, true, f.now())
}

// liveFile returns the node the kernel knows for key, if it is a file.
func (f *FS) liveFile(key string) *File {
	rel, ok := strings.CutPrefix(key, f.opts.Prefix)
	if !ok || rel == "" {
		return nil
	}
	parts := strings.Split(rel, "/")
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.root
	for _, name := range parts[:len(parts)-1] {
		next, ok := d.children[name].(*Dir)
		if !ok {
			return nil
		}
		d = next
	}
	file, _ := d.children[parts[len(parts)-1]].(*File)
	return file
}
