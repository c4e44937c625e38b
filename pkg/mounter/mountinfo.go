package mounter

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// MountInfo is one line of /proc/self/mountinfo, the fields the mounter uses.
type MountInfo struct {
	MountPoint string
	FSType     string
	Source     string
}

// parseMountInfo reads the mountinfo format (proc(5)): fields up to the
// optional-fields list, a "-" separator, then fstype, source and super options.
func parseMountInfo(r io.Reader) ([]MountInfo, error) {
	var out []MountInfo
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		// The fstype follows the separator; it is never "-" itself.
		if sep < 0 || sep+2 >= len(fields) || fields[sep+1] == "-" {
			return nil, fmt.Errorf("malformed mountinfo line %q", sc.Text())
		}
		out = append(out, MountInfo{
			MountPoint: unescapeOctal(fields[4]),
			FSType:     fields[sep+1],
			Source:     unescapeOctal(fields[sep+2]),
		})
	}
	return out, sc.Err()
}

// unescapeOctal undoes the kernel's \NNN escaping of space, tab, newline and backslash.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1:i+4]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return true
}

// mountAt returns the topmost mount on target, if any.
func mountAt(target string) (*MountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	mounts, err := parseMountInfo(f)
	if err != nil {
		return nil, err
	}
	target = filepath.Clean(target)
	var found *MountInfo
	for i := range mounts {
		if mounts[i].MountPoint == target {
			found = &mounts[i] // later lines are mounted on top of earlier ones
		}
	}
	return found, nil
}

// isFUSE reports whether a mount is served by a FUSE process.
func (mi *MountInfo) isFUSE() bool {
	return mi.FSType == "fuse" || strings.HasPrefix(mi.FSType, "fuse.")
}

// MountState is the condition of a target path.
type MountState int

const (
	// NotMounted: nothing is mounted on the target.
	NotMounted MountState = iota
	// Healthy: a FUSE mount answers on the target.
	Healthy
	// Dead: the mount is still there but its server is gone (ENOTCONN).
	Dead
	// Unresponsive: the server did not answer a stat in time; it may be busy.
	Unresponsive
	// Foreign: something other than a FUSE filesystem is mounted on the target.
	Foreign
)

func (s MountState) String() string {
	switch s {
	case NotMounted:
		return "not mounted"
	case Healthy:
		return "healthy"
	case Dead:
		return "dead"
	case Unresponsive:
		return "unresponsive"
	case Foreign:
		return "mounted by another filesystem"
	}
	return fmt.Sprintf("MountState(%d)", int(s))
}
