package store

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// multipartETag computes the expected ETag of a multipart object
// independently of the store: md5 over the binary md5s of the parts.
func multipartETag(bodies ...string) string {
	h := md5.New()
	for _, b := range bodies {
		sum := md5.Sum([]byte(b))
		h.Write(sum[:])
	}
	return fmt.Sprintf("%s-%d", hex.EncodeToString(h.Sum(nil)), len(bodies))
}

func TestMultipartComplete(t *testing.T) {
	s, _ := newTestStore(t, Options{NoSync: true, MinPartSize: 8})
	mustCreateBucket(t, s, "bkt")
	meta := ObjectMeta{ContentType: "application/x-test", Metadata: map[string]string{"Mode": "0640"}}
	up, err := s.CreateMultipartUpload("bkt", "dir/big", meta)
	if err != nil {
		t.Fatal(err)
	}
	if up.ID == "" || up.Bucket != "bkt" || up.Key != "dir/big" || up.Initiated.IsZero() || up.Metadata["mode"] != "0640" {
		t.Fatalf("upload = %+v", up)
	}
	bodies := map[int]string{1: "first-part|", 2: "stale second", 3: "tail"}
	for _, n := range []int{3, 1, 2} { // parts may arrive in any order
		if _, err := s.UploadPart("bkt", "dir/big", up.ID, n, strings.NewReader(bodies[n])); err != nil {
			t.Fatalf("part %d: %v", n, err)
		}
	}
	// Re-uploading a part number replaces it.
	bodies[2] = "second-part|"
	p2, err := s.UploadPart("bkt", "dir/big", up.ID, 2, strings.NewReader(bodies[2]))
	if err != nil {
		t.Fatal(err)
	}
	if p2.Number != 2 || p2.ETag != md5hex(bodies[2]) || p2.Size != int64(len(bodies[2])) {
		t.Fatalf("part = %+v", p2)
	}
	parts, err := s.ListParts("bkt", "dir/big", up.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 3 {
		t.Fatalf("ListParts = %+v", parts)
	}
	for i, p := range parts {
		if p.Number != i+1 || p.ETag != md5hex(bodies[i+1]) || p.Size != int64(len(bodies[i+1])) || p.LastModified.IsZero() {
			t.Fatalf("part %d = %+v", i, p)
		}
	}
	ups, err := s.ListMultipartUploads("bkt")
	if err != nil || len(ups) != 1 || ups[0].ID != up.ID || ups[0].Key != "dir/big" {
		t.Fatalf("ListMultipartUploads = %+v, %v", ups, err)
	}

	// Clients send ETags quoted; the store accepts both forms.
	req := []Part{{Number: 1, ETag: `"` + md5hex(bodies[1]) + `"`}, {Number: 2, ETag: p2.ETag}, {Number: 3, ETag: md5hex(bodies[3])}}
	obj, err := s.CompleteMultipartUpload("bkt", "dir/big", up.ID, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := bodies[1] + bodies[2] + bodies[3]
	if obj.ETag != multipartETag(bodies[1], bodies[2], bodies[3]) || obj.Size != int64(len(want)) || obj.ContentType != "application/x-test" || obj.Metadata["mode"] != "0640" {
		t.Fatalf("completed = %+v", obj)
	}
	if got, data := mustRead(t, s, "bkt", "dir/big"); data != want || got.ETag != obj.ETag {
		t.Fatalf("body = %q etag %s", data, got.ETag)
	}
	if _, err := s.ListParts("bkt", "dir/big", up.ID); !errors.Is(err, ErrNoSuchUpload) {
		t.Fatalf("upload still listed after complete: %v", err)
	}
	if ups, _ := s.ListMultipartUploads("bkt"); len(ups) != 0 {
		t.Fatalf("uploads after complete: %+v", ups)
	}
	if _, err := s.CompleteMultipartUpload("bkt", "dir/big", up.ID, req, nil); !errors.Is(err, ErrNoSuchUpload) {
		t.Fatalf("completing twice: %v", err)
	}
}

func TestMultipartSubsetAndSinglePart(t *testing.T) {
	s, _ := newTestStore(t, Options{NoSync: true, MinPartSize: 4})
	mustCreateBucket(t, s, "bkt")
	up, err := s.CreateMultipartUpload("bkt", "k", ObjectMeta{})
	if err != nil {
		t.Fatal(err)
	}
	var ps []Part
	for n, body := range []string{"aaaa", "bbbb", "cc"} {
		p, err := s.UploadPart("bkt", "k", up.ID, (n+1)*10, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	// Part numbers need not be contiguous, and unlisted parts are dropped.
	obj, err := s.CompleteMultipartUpload("bkt", "k", up.ID, []Part{ps[0], ps[2]}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, data := mustRead(t, s, "bkt", "k"); data != "aaaacc" || obj.ETag != multipartETag("aaaa", "cc") {
		t.Fatalf("object %q etag %s", data, obj.ETag)
	}
	// One small part is fine: the last part has no minimum.
	up2, _ := s.CreateMultipartUpload("bkt", "one", ObjectMeta{})
	p, _ := s.UploadPart("bkt", "one", up2.ID, 1, strings.NewReader("x"))
	if obj, err := s.CompleteMultipartUpload("bkt", "one", up2.ID, []Part{p}, nil); err != nil || obj.ETag != multipartETag("x") {
		t.Fatalf("single part: %+v, %v", obj, err)
	}
}

func TestMultipartErrors(t *testing.T) {
	s, _ := newTestStore(t, Options{NoSync: true, MinPartSize: 8})
	mustCreateBucket(t, s, "bkt")
	mustCreateBucket(t, s, "other")
	newUpload := func(t *testing.T) (string, []Part) {
		t.Helper()
		up, err := s.CreateMultipartUpload("bkt", "k", ObjectMeta{})
		if err != nil {
			t.Fatal(err)
		}
		var ps []Part
		for i, body := range []string{"12345678", "small", "end"} {
			p, err := s.UploadPart("bkt", "k", up.ID, i+1, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, p)
		}
		return up.ID, ps
	}
	tests := []struct {
		name string
		// parts builds the completion request from the uploaded parts.
		parts func(ps []Part) []Part
		id    func(id string) string
		key   string
		want  error
	}{
		{"descending", func(ps []Part) []Part { return []Part{ps[1], ps[0]} }, nil, "k", ErrInvalidPartOrder},
		{"duplicate number", func(ps []Part) []Part { return []Part{ps[0], ps[0]} }, nil, "k", ErrInvalidPartOrder},
		{"wrong etag", func(ps []Part) []Part { return []Part{{Number: 1, ETag: md5hex("other")}} }, nil, "k", ErrInvalidPart},
		{"missing part", func(ps []Part) []Part { return []Part{ps[0], {Number: 7, ETag: ps[2].ETag}} }, nil, "k", ErrInvalidPart},
		{"part number zero", func(ps []Part) []Part { return []Part{{Number: 0, ETag: ps[0].ETag}} }, nil, "k", ErrInvalidPart},
		{"no parts", func([]Part) []Part { return nil }, nil, "k", ErrInvalidPart},
		{"too small", func(ps []Part) []Part { return ps }, nil, "k", ErrEntityTooSmall},
		{"unknown upload", func(ps []Part) []Part { return ps[:1] }, func(string) string { return "0123456789abcdef0123456789abcdef" }, "k", ErrNoSuchUpload},
		{"upload of another key", func(ps []Part) []Part { return ps[:1] }, nil, "other-key", ErrNoSuchUpload},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, ps := newUpload(t)
			if tt.id != nil {
				id = tt.id(id)
			}
			if _, err := s.CompleteMultipartUpload("bkt", tt.key, id, tt.parts(ps), nil); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if _, err := s.HeadObject("bkt", "k"); !errors.Is(err, ErrNoSuchKey) {
				t.Fatalf("failed completion created the object: %v", err)
			}
		})
	}
	// A failed completion leaves the upload usable.
	id, ps := newUpload(t)
	if _, err := s.CompleteMultipartUpload("bkt", "k", id, ps, nil); !errors.Is(err, ErrEntityTooSmall) {
		t.Fatal(err)
	}
	if _, err := s.CompleteMultipartUpload("bkt", "k", id, []Part{ps[0], ps[2]}, func(*Object) error { return ErrPreconditionFailed }); !errors.Is(err, ErrPreconditionFailed) {
		t.Fatalf("refused completion: %v", err)
	}
	if _, err := s.CompleteMultipartUpload("bkt", "k", id, []Part{ps[0], ps[2]}, nil); err != nil {
		t.Fatalf("retry after failures: %v", err)
	}

	id, _ = newUpload(t)
	partErrs := []struct {
		name   string
		bucket string
		key    string
		id     string
		number int
		want   error
	}{
		{"part number 0", "bkt", "k", id, 0, ErrInvalidArgument},
		{"part number 10001", "bkt", "k", id, MaxPartNumber + 1, ErrInvalidArgument},
		{"unknown upload", "bkt", "k", "nope", 1, ErrNoSuchUpload},
		{"wrong key", "bkt", "k2", id, 1, ErrNoSuchUpload},
		{"wrong bucket", "other", "k", id, 1, ErrNoSuchUpload},
		{"missing bucket", "nope", "k", id, 1, ErrNoSuchBucket},
	}
	for _, tc := range partErrs {
		if _, err := s.UploadPart(tc.bucket, tc.key, tc.id, tc.number, strings.NewReader("x")); !errors.Is(err, tc.want) {
			t.Errorf("UploadPart %s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := s.UploadPart("bkt", "k", id, MaxPartNumber, strings.NewReader("x")); err != nil {
		t.Errorf("part number %d: %v", MaxPartNumber, err)
	}
	if _, err := s.CreateMultipartUpload("nope", "k", ObjectMeta{}); !errors.Is(err, ErrNoSuchBucket) {
		t.Errorf("create in missing bucket: %v", err)
	}
	if _, err := s.ListMultipartUploads("nope"); !errors.Is(err, ErrNoSuchBucket) {
		t.Errorf("list uploads of missing bucket: %v", err)
	}

	if err := s.AbortMultipartUpload("bkt", "k", id); err != nil {
		t.Fatal(err)
	}
	if err := s.AbortMultipartUpload("bkt", "k", id); !errors.Is(err, ErrNoSuchUpload) {
		t.Fatalf("abort twice: %v", err)
	}
	if _, err := s.UploadPart("bkt", "k", id, 1, strings.NewReader("x")); !errors.Is(err, ErrNoSuchUpload) {
		t.Fatalf("part after abort: %v", err)
	}
}

func TestDefaultMinPartSize(t *testing.T) {
	s, _ := newTestStore(t, Options{NoSync: true})
	mustCreateBucket(t, s, "bkt")
	up, err := s.CreateMultipartUpload("bkt", "k", ObjectMeta{})
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", int(MinPartSize)-1)
	p1, _ := s.UploadPart("bkt", "k", up.ID, 1, strings.NewReader(big))
	p2, _ := s.UploadPart("bkt", "k", up.ID, 2, strings.NewReader("y"))
	if _, err := s.CompleteMultipartUpload("bkt", "k", up.ID, []Part{p1, p2}, nil); !errors.Is(err, ErrEntityTooSmall) {
		t.Fatalf("part of MinPartSize-1 bytes: %v", err)
	}
	p1, _ = s.UploadPart("bkt", "k", up.ID, 1, strings.NewReader(big+"x"))
	obj, err := s.CompleteMultipartUpload("bkt", "k", up.ID, []Part{p1, p2}, nil)
	if err != nil {
		t.Fatalf("part of exactly MinPartSize: %v", err)
	}
	if obj.Size != MinPartSize+1 {
		t.Fatalf("size %d", obj.Size)
	}
}

func TestUploadPartCopy(t *testing.T) {
	s, _ := newTestStore(t, Options{NoSync: true, MinPartSize: 4})
	mustCreateBucket(t, s, "bkt")
	mustPut(t, s, "bkt", "src", "0123456789")
	up, err := s.CreateMultipartUpload("bkt", "dst", ObjectMeta{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		number         int
		offset, length int64
		want           string
		err            error
	}{
		{1, 2, 4, "2345", nil},
		{2, 0, -1, "0123456789", nil},
		{3, 7, -1, "789", nil},
		{4, 8, 3, "", ErrInvalidArgument},
		{4, -1, 2, "", ErrInvalidArgument},
		{4, 11, -1, "", ErrInvalidArgument},
	}
	var ps []Part
	for _, tt := range tests {
		p, err := s.UploadPartCopy("bkt", "dst", up.ID, tt.number, "bkt", "src", tt.offset, tt.length)
		if !errors.Is(err, tt.err) {
			t.Fatalf("copy %d+%d: got %v, want %v", tt.offset, tt.length, err, tt.err)
		}
		if err != nil {
			continue
		}
		if p.ETag != md5hex(tt.want) || p.Size != int64(len(tt.want)) {
			t.Fatalf("copy %d+%d: part %+v, want body %q", tt.offset, tt.length, p, tt.want)
		}
		ps = append(ps, p)
	}
	if _, err := s.UploadPartCopy("bkt", "dst", up.ID, 4, "bkt", "absent", 0, -1); !errors.Is(err, ErrNoSuchKey) {
		t.Fatalf("copy from missing key: %v", err)
	}
	if _, err := s.CompleteMultipartUpload("bkt", "dst", up.ID, ps, nil); err != nil {
		t.Fatal(err)
	}
	if _, data := mustRead(t, s, "bkt", "dst"); data != "23450123456789789" {
		t.Fatalf("assembled %q", data)
	}
}
