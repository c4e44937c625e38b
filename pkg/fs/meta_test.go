package fs

import (
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cosmount/cosmount/pkg/fs/memstore"
)

// s3fs metadata of a file: mode 0100600, owner 1234:5678, mtime 981173106.
var s3fsMeta = map[string]string{"mode": "33152", "uid": "1234", "gid": "5678", "mtime": "981173106"}

func statT(t *testing.T, path string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st
}

// A listing carries no metadata, so after ls a file shows the mount's
// defaults; the first read's GET carries the metadata, and from then on
// the file shows it, without any HEAD.
func TestMetadataAfterListingComesWithFirstRead(t *testing.T) {
	store := memstore.New()
	putObject(t, store, "d/f", "secret", s3fsMeta)
	_, mnt := mountT(t, store, testOptions())
	p := filepath.Join(mnt, "d", "f")
	shell(t, mnt, "ls -l d >/dev/null")
	store.ResetCounts()
	if b, err := readFile(p); err != nil || string(b) != "secret" {
		t.Fatalf("read: %q %v", b, err)
	}
	st := statT(t, p)
	if st.Mode&0o7777 != 0o600 || st.Uid != 1234 || st.Gid != 5678 || st.Mtim.Sec != 981173106 {
		t.Errorf("after a read: mode %#o uid %d gid %d mtime %d, want 0600 1234 5678 981173106",
			st.Mode&0o7777, st.Uid, st.Gid, st.Mtim.Sec)
	}
	if counts := store.Counts(); counts[memstore.OpGet] != 1 || len(counts) != 1 {
		t.Errorf("read + stat after ls cost %v, want one GET", counts)
	}
}

// Writing to a file known from a listing must keep its s3fs metadata: the
// upload writes mode, owner and mtime, which must not be the defaults.
func TestWriteAfterListingKeepsMetadata(t *testing.T) {
	tests := []struct {
		name  string
		flags int
	}{
		{"truncate", syscall.O_WRONLY | syscall.O_TRUNC},
		{"overwrite", syscall.O_WRONLY},
		{"append", syscall.O_WRONLY | syscall.O_APPEND},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := memstore.New()
			putObject(t, store, "d/f", "secret", s3fsMeta)
			_, mnt := mountT(t, store, testOptions())
			shell(t, mnt, "ls -l d >/dev/null")
			f, err := openRaw(filepath.Join(mnt, "d", "f"), tc.flags, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString("SECRET"); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			_, info := object(t, store, "d/f")
			md := info.Metadata
			if md["mode"] != "33152" || md["uid"] != "1234" || md["gid"] != "5678" {
				t.Errorf("metadata after the write: %v", md)
			}
		})
	}
}
