package fs

import (
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/cosmount/cosmount/pkg/cos"
)

// s3fs metadata names (x-amz-meta-*), so a bucket reads the same through
// s3fs and cosmount.
const (
	metaMode  = "mode"
	metaUID   = "uid"
	metaGID   = "gid"
	metaMtime = "mtime"

	dirContentType = "application/x-directory" // what s3fs and the COS console set on markers
)

// attrMeta is what a node shows as owner, mode and mtime. Mode carries the
// type bits (os.ModeDir, os.ModeSymlink) and the permission bits.
type attrMeta struct {
	mode  os.FileMode
	uid   uint32
	gid   uint32
	mtime time.Time
}

// maxMtime is the first second of year 10000, the end of what dates mean.
const maxMtime = 253402300800

// metaFromObject reads s3fs metadata, falling back to the defaults for every
// missing or malformed field and to LastModified for the mtime.
func metaFromObject(md map[string]string, lastModified time.Time, def attrMeta) attrMeta {
	m := def
	if !lastModified.IsZero() {
		m.mtime = lastModified
	}
	if v, ok := md[metaMode]; ok {
		if n, err := strconv.ParseUint(v, 10, 32); err == nil {
			m.mode = modeFromUnix(uint32(n), def.mode)
		}
	}
	if v, ok := md[metaUID]; ok {
		if n, err := strconv.ParseUint(v, 10, 32); err == nil {
			m.uid = uint32(n)
		}
	}
	if v, ok := md[metaGID]; ok {
		if n, err := strconv.ParseUint(v, 10, 32); err == nil {
			m.gid = uint32(n)
		}
	}
	if v, ok := md[metaMtime]; ok {
		// s3fs writes whole seconds; some tools write fractions. 0 is the
		// epoch (touch -d @0), which encode writes for any mtime in its
		// first second. Values past year 9999 (or NaN, or Inf) would
		// overflow the conversion.
		if f, err := strconv.ParseFloat(v, 64); err == nil && f >= 0 && f < maxMtime {
			sec := int64(f)
			m.mtime = time.Unix(sec, int64((f-float64(sec))*1e9))
		}
	}
	return m
}

// modeFromUnix converts an st_mode; when the type bits are absent the type of
// def is kept (s3fs sometimes stores permission bits only).
func modeFromUnix(st uint32, def os.FileMode) os.FileMode {
	perm := os.FileMode(st & 0o7777 & uint32(os.ModePerm))
	switch st & syscall.S_IFMT {
	case syscall.S_IFDIR:
		return os.ModeDir | perm
	case syscall.S_IFLNK:
		return os.ModeSymlink | perm
	case syscall.S_IFREG:
		return perm
	default:
		return def&os.ModeType | perm
	}
}

// unixMode is the st_mode s3fs stores: type bits and permissions, in decimal.
func unixMode(m os.FileMode) uint32 {
	st := uint32(m.Perm())
	switch {
	case m&os.ModeDir != 0:
		st |= syscall.S_IFDIR
	case m&os.ModeSymlink != 0:
		st |= syscall.S_IFLNK
	default:
		st |= syscall.S_IFREG
	}
	return st
}

// encode merges m into the object's other user metadata (which is kept).
func (m attrMeta) encode(existing map[string]string) map[string]string {
	out := make(map[string]string, len(existing)+4)
	for k, v := range existing {
		out[k] = v
	}
	out[metaMode] = strconv.FormatUint(uint64(unixMode(m.mode)), 10)
	out[metaUID] = strconv.FormatUint(uint64(m.uid), 10)
	out[metaGID] = strconv.FormatUint(uint64(m.gid), 10)
	out[metaMtime] = strconv.FormatInt(m.mtime.Unix(), 10)
	return out
}

// isSymlinkObject tells from HEAD metadata whether an object is an s3fs symlink.
func isSymlinkObject(info cos.ObjectInfo) bool {
	v, ok := info.Metadata[metaMode]
	if !ok {
		return false
	}
	n, err := strconv.ParseUint(v, 10, 32)
	return err == nil && uint32(n)&syscall.S_IFMT == syscall.S_IFLNK
}
