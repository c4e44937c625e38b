package fs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/fs/memstore"
)

func TestParseMountOptions(t *testing.T) {
	def := DefaultOptions()
	tests := []struct {
		in      string
		check   func(Options) bool
		wantErr string
	}{
		{"", func(o Options) bool { return o.PartSize == def.PartSize && !o.ReadOnly }, ""},
		{"uid=1000,gid=2000,file_mode=0600,dir_mode=0700", func(o Options) bool {
			return o.UID == 1000 && o.GID == 2000 && o.FileMode == 0o600 && o.DirMode == 0o700
		}, ""},
		{"allow_other,ro", func(o Options) bool { return o.AllowOther && o.ReadOnly }, ""},
		{"ro,rw", func(o Options) bool { return !o.ReadOnly }, ""},
		{"prefix=team/data,attr_ttl=1s,entry_ttl=2m,negative_ttl=0s", func(o Options) bool {
			return o.Prefix == "team/data" && o.AttrTTL == time.Second && o.EntryTTL == 2*time.Minute && o.NegativeTTL == 0
		}, ""},
		{"part_size=16MiB,upload_concurrency=8,memory_limit=1GiB,multipart_threshold=32M,readahead_max=0", func(o Options) bool {
			return o.PartSize == 16*MiB && o.UploadConcurrency == 8 && o.MemoryLimit == GiB && o.MultipartThreshold == 32*MiB && o.ReadaheadMax == 0
		}, ""},
		{" uid=1 , ,gid=2", func(o Options) bool { return o.UID == 1 && o.GID == 2 }, ""},
		{"bogus=1", nil, `unknown mount option "bogus"`},
		{"noatime", nil, `unknown mount option "noatime"`},
		{"ro=1", nil, "ro takes no value"},
		{"uid=-1", nil, "uid"},
		{"file_mode=0999", nil, "file_mode"},
		{"file_mode=01777", nil, "file_mode"},
		{"attr_ttl=soon", nil, "attr_ttl"},
		{"attr_ttl=-1s", nil, "attr_ttl"},
		{"part_size=1MiB", nil, "part_size"},
		{"part_size=lots", nil, "part_size"},
		{"upload_concurrency=0", nil, "upload_concurrency"},
		{"memory_limit=8MiB", nil, "memory_limit"},
		{"prefix=/abs", nil, "prefix"},
		{"temp_dir=/does/not/exist", nil, "temp_dir"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			o, err := ParseMountOptions(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(o) {
				t.Errorf("parsed %+v", o)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "512KiB": 512 * KiB, "16M": 16 * MiB, "1GiB": GiB, "2G": 2 * GiB, "5MB": 5000000, "7B": 7} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "1.5GiB", "99999999999999GiB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

func TestNewValidatesAndFillsDefaults(t *testing.T) {
	if _, err := New(nil, Options{}); err == nil {
		t.Error("nil store accepted")
	}
	fsys, err := New(struct{ ObjectStore }{}, Options{Prefix: "p"})
	if err != nil {
		t.Fatal(err)
	}
	o := fsys.Options()
	if o.Prefix != "p/" || o.PartSize != 8*MiB || o.FileMode != 0o644 {
		t.Errorf("defaults not filled: %+v", o)
	}
	err = Options{PartSize: MiB, UploadConcurrency: 100, MemoryLimit: 1, MultipartThreshold: 1}.Validate()
	for _, name := range []string{"part_size", "upload_concurrency", "memory_limit"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("Validate does not name %s: %v", name, err)
		}
	}
}

func TestErrnoMapping(t *testing.T) {
	wrap := func(kind error) error { return fmt.Errorf("ctx: %w", &cos.Error{Op: "X", Kind: kind}) }
	tests := []struct {
		err  error
		want syscall.Errno
	}{
		{wrap(cos.ErrNotFound), syscall.ENOENT},
		{wrap(cos.ErrAccessDenied), syscall.EACCES},
		{wrap(cos.ErrNoCredentials), syscall.EIO},
		{&cos.Error{Kind: cos.ErrNoCredentials, Err: syscall.ENOENT}, syscall.EIO},
		{wrap(cos.ErrPreconditionFailed), syscall.ESTALE},
		{wrap(cos.ErrUnavailable), syscall.EIO},
		{&cos.Error{Kind: cos.ErrUnavailable, Err: syscall.ECONNREFUSED}, syscall.EIO},
		{wrap(cos.ErrEntityTooSmall), syscall.EIO},
		{context.Canceled, syscall.EINTR},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), syscall.EIO},
		{syscall.ENOTEMPTY, syscall.ENOTEMPTY},
		{errors.New("anything else"), syscall.EIO},
	}
	for _, tc := range tests {
		if got := errno(tc.err); got != tc.want {
			t.Errorf("errno(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if errno(nil) != nil {
		t.Error("errno(nil) != nil")
	}
}

func TestMountFailsFastWhenBucketIsNotListable(t *testing.T) {
	store := memstore.New()
	store.FailOp(memstore.OpList, &cos.Error{Op: "ListObjectsV2", Kind: cos.ErrAccessDenied})
	_, err := Mount(context.Background(), t.TempDir(), store, testOptions())
	if !errors.Is(err, cos.ErrAccessDenied) {
		t.Errorf("mount with an unlistable bucket: %v", err)
	}
}
