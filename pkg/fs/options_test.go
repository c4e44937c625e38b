package fs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/fs/memstore"
	"github.com/cosmount/cosmount/pkg/volume"
)

func TestNewValidatesAndFillsDefaults(t *testing.T) {
	if _, err := New(nil, Options{}); err == nil {
		t.Error("nil store accepted")
	}
	fsys, err := New(struct{ ObjectStore }{}, Options{Options: volume.Options{Prefix: "p"}})
	if err != nil {
		t.Fatal(err)
	}
	o := fsys.Options()
	if o.Prefix != "p/" || o.PartSize != 8*MiB || o.FileMode != 0o644 {
		t.Errorf("defaults not filled: %+v", o)
	}
	noDir := DefaultOptions()
	noDir.TempDir = "/does/not/exist"
	if err := noDir.Validate(); err == nil || !strings.Contains(err.Error(), "temp_dir") {
		t.Errorf("a missing temp_dir: %v", err)
	}
	err = Options{Options: volume.Options{PartSize: MiB, UploadConcurrency: 100, MemoryLimit: 1, MultipartThreshold: 1}}.Validate()
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
