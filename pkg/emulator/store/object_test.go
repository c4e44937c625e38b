package store

import (
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

func TestObjectLifecycle(t *testing.T) {
	s, dir := newTestStore(t, Options{NoSync: true})
	mustCreateBucket(t, s, "bkt")

	meta := ObjectMeta{ContentType: "text/plain", Metadata: map[string]string{"Mode": "0644", "mtime": "1700000000"}}
	obj, err := s.PutObject("bkt", "dir/file.txt", strings.NewReader("hello"), meta, nil)
	if err != nil {
		t.Fatal(err)
	}
	if obj.Key != "dir/file.txt" || obj.Size != 5 || obj.ETag != md5hex("hello") || obj.LastModified.IsZero() {
		t.Fatalf("put returned %+v", obj)
	}
	head, err := s.HeadObject("bkt", "dir/file.txt")
	if err != nil {
		t.Fatal(err)
	}
	if head.ContentType != "text/plain" || head.Metadata["mode"] != "0644" || head.Metadata["mtime"] != "1700000000" || len(head.Metadata) != 2 {
		t.Fatalf("head meta = %+v", head.ObjectMeta)
	}
	if !head.LastModified.Equal(obj.LastModified) || head.ETag != obj.ETag {
		t.Fatalf("head %+v differs from put %+v", head, obj)
	}
	// Callers' maps are not aliased.
	meta.Metadata["mode"] = "changed"
	head.Metadata["mode"] = "changed"
	if h, _ := s.HeadObject("bkt", "dir/file.txt"); h.Metadata["mode"] != "0644" {
		t.Fatalf("stored metadata changed through an alias: %v", h.Metadata)
	}

	// Seekable body.
	_, body, err := s.OpenObject("bkt", "dir/file.txt")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := body.Seek(1, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(body)
	body.Close()
	if string(rest) != "ello" {
		t.Fatalf("read after seek = %q", rest)
	}

	// Overwrite replaces body and metadata.
	obj2, err := s.PutObject("bkt", "dir/file.txt", strings.NewReader("second version"), ObjectMeta{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, data := mustRead(t, s, "bkt", "dir/file.txt")
	if data != "second version" || got.ETag != obj2.ETag || got.ContentType != "" || len(got.Metadata) != 0 {
		t.Fatalf("after overwrite: %+v %q", got, data)
	}

	// Zero-length object (a directory marker).
	if o := mustPut(t, s, "bkt", "dir/", ""); o.Size != 0 || o.ETag != md5hex("") {
		t.Fatalf("empty put = %+v", o)
	}
	if _, data := mustRead(t, s, "bkt", "dir/"); data != "" {
		t.Fatalf("empty body = %q", data)
	}

	errCases := []struct {
		name   string
		bucket string
		key    string
		want   error
	}{
		{"missing bucket", "nope", "k", ErrNoSuchBucket},
		{"missing key", "bkt", "absent", ErrNoSuchKey},
		{"key too long", "bkt", strings.Repeat("k", MaxKeyLength+1), ErrKeyTooLong},
		{"empty key", "bkt", "", ErrInvalidArgument},
		{"invalid utf-8", "bkt", "bad\xffkey", ErrInvalidArgument},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.HeadObject(tc.bucket, tc.key); !errors.Is(err, tc.want) {
				t.Errorf("head: got %v, want %v", err, tc.want)
			}
			if _, _, err := s.OpenObject(tc.bucket, tc.key); !errors.Is(err, tc.want) {
				t.Errorf("open: got %v, want %v", err, tc.want)
			}
			if tc.want == ErrNoSuchKey {
				return
			}
			if _, err := s.PutObject(tc.bucket, tc.key, strings.NewReader("x"), ObjectMeta{}, nil); !errors.Is(err, tc.want) {
				t.Errorf("put: got %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := s.PutObject("bkt", strings.Repeat("k", MaxKeyLength), strings.NewReader("x"), ObjectMeta{}, nil); err != nil {
		t.Fatalf("key of exactly %d bytes: %v", MaxKeyLength, err)
	}
	if err := s.DeleteObject("bkt", strings.Repeat("k", MaxKeyLength), nil); err != nil {
		t.Fatal(err)
	}

	if err := s.DeleteObject("bkt", "dir/file.txt", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.HeadObject("bkt", "dir/file.txt"); !errors.Is(err, ErrNoSuchKey) {
		t.Fatalf("after delete: %v", err)
	}
	if err := s.DeleteObject("bkt", "dir/file.txt", nil); err != nil {
		t.Fatalf("delete of missing key: %v", err)
	}
	if err := s.DeleteObject("nope", "k", nil); !errors.Is(err, ErrNoSuchBucket) {
		t.Fatalf("delete in missing bucket: %v", err)
	}
	// Only the empty marker remains, and it has no blob; a failed put left no temp file.
	if files := filesUnder(t, filepath.Join(dir, blobsDir)); len(files) != 0 {
		t.Fatalf("blobs left after deletes: %v", files)
	}
	if files := filesUnder(t, filepath.Join(dir, tmpDir)); len(files) != 0 {
		t.Fatalf("temp files left: %v", files)
	}
}

// failingReader delivers some bytes and then an error, like a dropped client.
type failingReader struct{ sent bool }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.sent {
		return 0, errors.New("connection reset")
	}
	r.sent = true
	return copy(p, "partial"), nil
}

func TestFailedPutLeavesNoTrace(t *testing.T) {
	s, dir := newTestStore(t, Options{NoSync: true})
	mustCreateBucket(t, s, "bkt")
	mustPut(t, s, "bkt", "k", "original")
	if _, err := s.PutObject("bkt", "k", &failingReader{}, ObjectMeta{}, nil); err == nil {
		t.Fatal("put from a failing reader succeeded")
	}
	if _, data := mustRead(t, s, "bkt", "k"); data != "original" {
		t.Fatalf("failed put changed the object to %q", data)
	}
	if _, err := s.PutObject("bkt", "new", &failingReader{}, ObjectMeta{}, nil); err == nil {
		t.Fatal("put from a failing reader succeeded")
	}
	if _, err := s.HeadObject("bkt", "new"); !errors.Is(err, ErrNoSuchKey) {
		t.Fatalf("half-written object is visible: %v", err)
	}
	if files := filesUnder(t, filepath.Join(dir, tmpDir)); len(files) != 0 {
		t.Fatalf("temp files left: %v", files)
	}
	if files := filesUnder(t, filepath.Join(dir, blobsDir)); len(files) != 1 {
		t.Fatalf("blobs = %v, want exactly the original's", files)
	}
}

func TestReaderKeepsItsVersion(t *testing.T) {
	s, _ := newTestStore(t, Options{NoSync: true})
	mustCreateBucket(t, s, "bkt")
	first := mustPut(t, s, "bkt", "k", "first body")
	obj, body, err := s.OpenObject("bkt", "k")
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	mustPut(t, s, "bkt", "k", "second body, longer")
	if err := s.DeleteObject("bkt", "k", nil); err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != "first body" || obj.ETag != first.ETag {
		t.Fatalf("reader saw %q (etag %s), want the first version", data, obj.ETag)
	}
}

func TestCopyObject(t *testing.T) {
	s, _ := newTestStore(t, Options{NoSync: true, MinPartSize: 4})
	mustCreateBucket(t, s, "src")
	mustCreateBucket(t, s, "dst")
	orig, err := s.PutObject("src", "k", strings.NewReader("copy me"), ObjectMeta{ContentType: "text/plain", Metadata: map[string]string{"mode": "0600"}}, nil)
	if err != nil {
		t.Fatal(err)
	}

	c, err := s.CopyObject("src", "k", "dst", "k2", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Key != "k2" || c.ETag != orig.ETag || c.Size != orig.Size || c.ContentType != "text/plain" || c.Metadata["mode"] != "0600" {
		t.Fatalf("copy kept meta wrongly: %+v", c)
	}
	// Same key, new metadata: the body stays, the metadata is replaced.
	r, err := s.CopyObject("src", "k", "src", "k", &ObjectMeta{Metadata: map[string]string{"MTime": "5"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, data := mustRead(t, s, "src", "k")
	if data != "copy me" || got.ETag != orig.ETag || got.ContentType != "" || len(got.Metadata) != 1 || got.Metadata["mtime"] != "5" || !got.LastModified.Equal(r.LastModified) {
		t.Fatalf("after metadata replace: %+v %q", got, data)
	}
	// The copy is independent of its source.
	if err := s.DeleteObject("src", "k", nil); err != nil {
		t.Fatal(err)
	}
	if _, data := mustRead(t, s, "dst", "k2"); data != "copy me" {
		t.Fatalf("copy after source delete = %q", data)
	}

	// Copying a multipart object yields a plain md5 ETag.
	up, err := s.CreateMultipartUpload("src", "mp", ObjectMeta{})
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := s.UploadPart("src", "mp", up.ID, 1, strings.NewReader("12345"))
	p2, _ := s.UploadPart("src", "mp", up.ID, 2, strings.NewReader("678"))
	mp, err := s.CompleteMultipartUpload("src", "mp", up.ID, []Part{p1, p2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cm, err := s.CopyObject("src", "mp", "dst", "mp", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(mp.ETag, "-2") || cm.ETag != md5hex("12345678") {
		t.Fatalf("multipart etag %s, copy etag %s", mp.ETag, cm.ETag)
	}

	errCases := []struct {
		name           string
		sb, sk, db, dk string
		want           error
	}{
		{"missing source key", "src", "absent", "dst", "x", ErrNoSuchKey},
		{"missing source bucket", "nope", "k", "dst", "x", ErrNoSuchBucket},
		{"missing destination bucket", "dst", "k2", "nope", "x", ErrNoSuchBucket},
		{"destination key too long", "dst", "k2", "dst", strings.Repeat("x", MaxKeyLength+1), ErrKeyTooLong},
	}
	for _, tc := range errCases {
		if _, err := s.CopyObject(tc.sb, tc.sk, tc.db, tc.dk, nil, nil); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	// A refused copy leaves the destination alone.
	if _, err := s.CopyObject("dst", "mp", "dst", "k2", nil, func(*Object) error { return ErrPreconditionFailed }); !errors.Is(err, ErrPreconditionFailed) {
		t.Fatalf("refused copy: %v", err)
	}
	if _, data := mustRead(t, s, "dst", "k2"); data != "copy me" {
		t.Fatalf("refused copy changed destination to %q", data)
	}
}

func TestPreconditionSeesExisting(t *testing.T) {
	s, _ := newTestStore(t, Options{NoSync: true})
	mustCreateBucket(t, s, "bkt")
	ifMatch := func(etag string) Precondition {
		return func(existing *Object) error {
			if existing == nil || existing.ETag != etag {
				return ErrPreconditionFailed
			}
			return nil
		}
	}
	if _, err := s.PutObject("bkt", "k", strings.NewReader("v1"), ObjectMeta{}, ifMatch("x")); !errors.Is(err, ErrPreconditionFailed) {
		t.Fatalf("if-match on absent key: %v", err)
	}
	v1 := mustPut(t, s, "bkt", "k", "v1")
	if _, err := s.PutObject("bkt", "k", strings.NewReader("v2"), ObjectMeta{}, ifMatch(md5hex("other"))); !errors.Is(err, ErrPreconditionFailed) {
		t.Fatalf("if-match with wrong etag: %v", err)
	}
	if _, err := s.PutObject("bkt", "k", strings.NewReader("v2"), ObjectMeta{}, ifMatch(v1.ETag)); err != nil {
		t.Fatalf("if-match with right etag: %v", err)
	}
	if err := s.DeleteObject("bkt", "k", ifMatch(v1.ETag)); !errors.Is(err, ErrPreconditionFailed) {
		t.Fatalf("delete if-match stale etag: %v", err)
	}
	if err := s.DeleteObject("bkt", "k", ifMatch(md5hex("v2"))); err != nil {
		t.Fatalf("delete if-match current etag: %v", err)
	}
	if _, err := s.HeadObject("bkt", "k"); !errors.Is(err, ErrNoSuchKey) {
		t.Fatalf("conditional delete did not delete: %v", err)
	}
	custom := errors.New("custom refusal")
	if _, err := s.PutObject("bkt", "k", strings.NewReader("v"), ObjectMeta{}, func(*Object) error { return custom }); !errors.Is(err, custom) {
		t.Fatalf("precondition error not passed through: %v", err)
	}
}
