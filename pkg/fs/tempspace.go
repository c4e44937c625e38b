package fs

import (
	"fmt"
	"sync"
	"syscall"

	"github.com/cosmount/cosmount/pkg/volume"
)

// tempSpace bounds the bytes of all temporary files of one mount
// (read-modify-write and random writes), the temp_limit option. Each
// temporary content holds a reservation of its file's size; a write or
// download that would take the mount past the limit fails with ENOSPC
// before a byte reaches the disk, so one volume's writer can never fill
// the node's disk. Sparse files are counted by their size, which is what
// their upload will read.
type tempSpace struct {
	limit int64 // 0: no limit

	mu   sync.Mutex
	used int64 // guarded by mu
}

func newTempSpace(limit int64) *tempSpace { return &tempSpace{limit: limit} }

// resize sets c's reservation to size bytes, or fails with ENOSPC and
// leaves it unchanged. Shrinking always succeeds.
func (t *tempSpace) resize(c *content, size int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	delta := size - c.tempReserved
	if delta > 0 && t.limit > 0 && t.used+delta > t.limit {
		return fmt.Errorf("the volume's temporary space is full (temp_limit %s, %s in use): %w",
			volume.FormatSize(t.limit), volume.FormatSize(t.used), syscall.ENOSPC)
	}
	t.used += delta
	c.tempReserved = size
	return nil
}

// grow makes c's reservation at least size bytes.
func (t *tempSpace) grow(c *content, size int64) error {
	if size <= c.tempReserved {
		return nil
	}
	return t.resize(c, size)
}

// inUse reports the reserved bytes.
func (t *tempSpace) inUse() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.used
}

// reservingWriter writes a download sequentially into a temporary file,
// reserving space before each write.
type reservingWriter struct {
	c   *content
	off int64
}

func (w *reservingWriter) Write(p []byte) (int, error) {
	if err := w.c.temp.grow(w.c, w.off+int64(len(p))); err != nil {
		return 0, err
	}
	n, err := w.c.file.WriteAt(p, w.off)
	w.off += int64(n)
	return n, err
}
