package fs

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/cos"
)

// FuzzMetadata: s3fs metadata headers written by any client. Reading them
// never panics, falls back to the defaults for what it cannot use, yields
// only the type bits a node can have, and what it yields survives a round
// trip through encode.
func FuzzMetadata(f *testing.F) {
	f.Add("33188", "1000", "1000", "1700000000")
	f.Add("16877", "0", "0", "1700000000.25")
	f.Add("41471", "", "", "")             // s3fs symlink, lrwxrwxrwx
	f.Add("420", "-1", "4294967296", "-5") // permission bits only, bad ids, bad mtime
	f.Add("x", "1e3", "0x10", "NaN")
	f.Add("4294967295", "4294967295", "4294967295", "1e300")
	f.Fuzz(func(t *testing.T, mode, uid, gid, mtime string) {
		md := map[string]string{metaMode: mode, metaUID: uid, metaGID: gid, metaMtime: mtime}
		def := attrMeta{mode: 0o640, uid: 7, gid: 8, mtime: time.Unix(100, 0)}
		m := metaFromObject(md, time.Time{}, def)
		if typ := m.mode & os.ModeType; typ != 0 && typ != os.ModeDir && typ != os.ModeSymlink {
			t.Fatalf("mode %v from %q has type bits %v", m.mode, mode, typ)
		}
		if _, err := strconv.ParseUint(uid, 10, 32); err != nil && m.uid != def.uid {
			t.Fatalf("malformed uid %q gave %d", uid, m.uid)
		}
		again := metaFromObject(m.encode(nil), time.Time{}, def)
		if again.mode != m.mode || again.uid != m.uid || again.gid != m.gid || again.mtime.Unix() != m.mtime.Unix() {
			t.Fatalf("round trip of %+v gave %+v", m, again)
		}
		if isSymlinkObject(cos.ObjectInfo{Metadata: md}) != (metaFromObject(md, time.Time{}, attrMeta{}).mode&os.ModeSymlink != 0) {
			t.Fatalf("isSymlinkObject and metaFromObject disagree on mode %q", mode)
		}
	})
}

// FuzzSymlinkTarget: the body of an s3fs symlink object, written by any
// client, is a target only if the kernel can take it whole.
func FuzzSymlinkTarget(f *testing.F) {
	f.Add([]byte("../target"))
	f.Add([]byte(""))
	f.Add([]byte("a\x00b"))
	f.Add([]byte(strings.Repeat("d/", 2048)))
	f.Add([]byte("\xff\xfe not utf-8"))
	f.Fuzz(func(t *testing.T, body []byte) {
		target, err := symlinkTarget(body)
		if err != nil {
			if target != "" {
				t.Fatalf("a refused body gave target %q", target)
			}
			return
		}
		if target != string(body) || len(target) == 0 || len(target) > maxSymlinkTarget || strings.IndexByte(target, 0) >= 0 {
			t.Fatalf("body %q gave target %q", body, target)
		}
	})
}
