// Package filestamp tells one version of a file from another without
// reading it, for credential files that are replaced while they are in use.
package filestamp

import (
	"os"
	"syscall"
	"time"
)

// Stamp identifies one version of a file: an atomic replacement (write a
// new file, rename it over the old one) changes the inode, an in-place
// rewrite the modification time or the size. The zero Stamp is no file.
type Stamp struct {
	dev, ino uint64
	mtime    time.Time
	size     int64
}

// Of stats path (following symlinks, as a projected Secret's ..data link
// needs) and returns its stamp.
func Of(path string) (Stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Stamp{}, err
	}
	st := Stamp{mtime: fi.ModTime(), size: fi.Size()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.dev, st.ino = uint64(sys.Dev), sys.Ino
	}
	return st, nil
}
