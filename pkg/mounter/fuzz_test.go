package mounter

import (
	"strings"
	"testing"
)

// FuzzParseMountInfo: /proc/self/mountinfo, whose mount points and sources
// any user who can mount (FUSE allows it) may fill with odd names. Parsing
// never panics; a line it accepts yields a mount point and an fstype.
func FuzzParseMountInfo(f *testing.F) {
	f.Add("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n")
	f.Add("100 1 0:50 / /var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/pv/mount rw,nosuid,nodev,relatime shared:7 - fuse.cosmount cosmount rw,user_id=0,group_id=0\n")
	f.Add(`41 1 0:40 / /with\040space\134back rw - fuse.cosmount src\011tab rw` + "\n")
	f.Add("1 2 3 4 5 6 7 8 9 10\n")
	f.Add("1 2 3:4 / /m rw - \n")
	f.Add(`1 2 3:4 / /m\7 rw - t s\` + "\n")
	f.Fuzz(func(t *testing.T, s string) {
		mounts, err := parseMountInfo(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, m := range mounts {
			if m.FSType == "" || m.FSType == "-" {
				t.Fatalf("mount %+v from %q", m, s)
			}
		}
	})
}
