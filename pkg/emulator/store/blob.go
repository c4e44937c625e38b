package store

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"k8s.io/klog/v2"
)

// copyBufSize bounds the memory one streaming write uses.
const copyBufSize = 256 << 10

// newID returns a random hex identifier for blobs, part files and uploads.
func newID() string {
	var b [16]byte
	// crypto/rand.Read never fails on Linux (it panics instead of returning
	// an error on an unusable source since Go 1.24).
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *Store) blobPath(id string) string {
	return s.path(blobsDir, id[:2], id)
}

func (s *Store) uploadDir(uploadID string) string {
	return s.path(uploadsDir, uploadID)
}

// written is a finished, synced file that metadata does not reference yet.
type written struct {
	path string
	size int64
	md5  []byte
}

// discard removes a written file that will not be referenced.
func (w written) discard() {
	if w.path != "" {
		_ = os.Remove(w.path)
	}
}

// writeFile streams r into a new file created in dir (named by pattern, as
// os.CreateTemp does), computing its size and md5, and syncs it. The file is
// removed again on any error.
func (s *Store) writeFile(dir, pattern string, r io.Reader) (written, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return written{}, err
	}
	h := md5.New()
	buf := make([]byte, copyBufSize)
	n, err := io.CopyBuffer(io.MultiWriter(f, h), r, buf)
	if err == nil {
		err = s.syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return written{}, fmt.Errorf("store: write body: %w", err)
	}
	return written{path: f.Name(), size: n, md5: h.Sum(nil)}, nil
}

func (s *Store) syncFile(f *os.File) error {
	if s.noSync {
		return nil
	}
	return f.Sync()
}

// syncDir makes a rename or create in dir durable.
func (s *Store) syncDir(dir string) error {
	if s.noSync {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// installBlob moves a written temp file into the blob directory under a new
// id. Zero-length bodies get no file at all (id ""), which keeps directory
// markers cheap.
func (s *Store) installBlob(w written) (string, error) {
	if w.size == 0 {
		w.discard()
		return "", nil
	}
	id := newID()
	dst := s.blobPath(id)
	if err := os.Rename(w.path, dst); err != nil {
		w.discard()
		return "", fmt.Errorf("store: install blob: %w", err)
	}
	if err := s.syncDir(filepath.Dir(dst)); err != nil {
		_ = os.Remove(dst)
		return "", fmt.Errorf("store: sync blob dir: %w", err)
	}
	return id, nil
}

// removeBlob unlinks a blob that no metadata references any more. Readers
// that opened it keep reading it.
func (s *Store) removeBlob(id string) {
	if id == "" {
		return
	}
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	removeLogged(s.blobPath(id))
}

// removeLogged unlinks a file nothing references any more. A failure only
// leaks disk space until the next Open collects it, so it is logged, not
// returned to a caller whose operation already succeeded.
func removeLogged(path string) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		klog.ErrorS(err, "Removing unreferenced store file", "path", path)
	}
}

// openBlob opens a blob; the caller holds fileMu shared.
func (s *Store) openBlob(id string) (io.ReadSeekCloser, error) {
	if id == "" {
		return emptyBody{bytes.NewReader(nil)}, nil
	}
	f, err := os.Open(s.blobPath(id))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("store: blob %s missing: %w", id, err)
		}
		return nil, fmt.Errorf("store: open blob: %w", err)
	}
	return f, nil
}

// linkBlob gives the body of blob src a second, independent name, so a copy
// costs no data movement; blobs are immutable, so sharing the inode is safe.
// Falls back to copying on filesystems without hard links. The caller holds
// fileMu shared so src cannot vanish meanwhile.
func (s *Store) linkBlob(src string) (string, error) {
	if src == "" {
		return "", nil
	}
	id := newID()
	dst := s.blobPath(id)
	if err := os.Link(s.blobPath(src), dst); err == nil {
		if err := s.syncDir(filepath.Dir(dst)); err != nil {
			_ = os.Remove(dst)
			return "", fmt.Errorf("store: sync blob dir: %w", err)
		}
		return id, nil
	}
	in, err := os.Open(s.blobPath(src))
	if err != nil {
		return "", fmt.Errorf("store: open copy source: %w", err)
	}
	defer in.Close()
	w, err := s.writeFile(s.path(tmpDir), "copy-*", in)
	if err != nil {
		return "", err
	}
	return s.installBlob(w)
}

// emptyBody is the reader of a zero-length object.
type emptyBody struct{ *bytes.Reader }

func (emptyBody) Close() error { return nil }

func md5Hex(r io.Reader) (string, error) {
	h := md5.New()
	if _, err := io.CopyBuffer(h, r, make([]byte, copyBufSize)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
