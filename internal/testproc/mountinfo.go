// Package testproc holds the process and mount helpers that the test programs
// (test/demo, test/bench, test/e2e, test/interop, test/cluster) share: start a
// child with its output in a log file and stop it by PID, read a process's
// state, CPU time and peak memory from /proc, and read the mount table from
// /proc/self/mountinfo. It is test code only; the product has its own
// mountinfo reader in pkg/mounter.
package testproc

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"strconv"
	"strings"
)

// Mount is one line of /proc/self/mountinfo, the fields the tests look at.
type Mount struct {
	ID     int    // mount ID, field 1
	Point  string // mount point, unescaped
	FSType string // file system type, after the " - " separator; "" if the line has none
}

// Mounts lists the mounts of this process's mount namespace, in the kernel's
// order (a mount stacked on another comes after it).
func Mounts() ([]Mount, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return parseMountinfo(bytes.NewReader(data))
}

// parseMountinfo reads the format of proc(5): id parent major:minor root
// mountpoint options [optional fields...] - fstype source superoptions.
// Lines too short to name a mount point are skipped.
func parseMountinfo(r io.Reader) ([]Mount, error) {
	var mounts []Mount
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		m := Mount{Point: UnescapeMountinfo(fields[4])}
		m.ID, _ = strconv.Atoi(fields[0])
		// The optional fields come after field 6 and are never a lone "-".
		for i := 5; i+1 < len(fields); i++ {
			if fields[i] == "-" {
				m.FSType = fields[i+1]
				break
			}
		}
		mounts = append(mounts, m)
	}
	return mounts, sc.Err()
}

// MountsUnder lists the mounts at dir or below it, in the kernel's order.
func MountsUnder(dir string) ([]Mount, error) {
	all, err := Mounts()
	var under []Mount
	for _, m := range all {
		if m.Point == dir || strings.HasPrefix(m.Point, dir+"/") {
			under = append(under, m)
		}
	}
	return under, err
}

// IsMounted reports whether dir is a mount point, of type fstype if that is
// not empty. An unreadable mount table counts as not mounted.
func IsMounted(dir, fstype string) bool {
	all, err := Mounts()
	if err != nil {
		return false
	}
	for _, m := range all {
		if m.Point == dir && (fstype == "" || m.FSType == fstype) {
			return true
		}
	}
	return false
}

// UnescapeMountinfo undoes the octal escapes (\040 for a space, \011 for a
// tab, \012 for a newline, \134 for a backslash) the kernel uses for paths in
// mountinfo.
func UnescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
