package store

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// newTestStore opens a store in a fresh directory and closes it at test end.
func newTestStore(t *testing.T, opts Options) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := OpenWithOptions(dir, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, dir
}

func mustCreateBucket(t *testing.T, s *Store, name string) {
	t.Helper()
	if err := s.CreateBucket(name, "us-south", "instance-1"); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
}

func mustPut(t *testing.T, s *Store, bucket, key, body string) Object {
	t.Helper()
	obj, err := s.PutObject(bucket, key, strings.NewReader(body), ObjectMeta{}, nil)
	if err != nil {
		t.Fatalf("put %s/%s: %v", bucket, key, err)
	}
	return obj
}

// mustRead returns the object and body of key.
func mustRead(t *testing.T, s *Store, bucket, key string) (Object, string) {
	t.Helper()
	obj, body, err := s.OpenObject(bucket, key)
	if err != nil {
		t.Fatalf("open %s/%s: %v", bucket, key, err)
	}
	defer body.Close()
	data, err := io.ReadAll(body)
	if err != nil {
		t.Fatalf("read %s/%s: %v", bucket, key, err)
	}
	return obj, string(data)
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// filesUnder lists the regular files below dir, relative to it.
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	sort.Strings(out)
	return out
}

func TestValidBucketName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"abc", true},
		{"my-bucket.data-01", true},
		{"0bucket9", true},
		{strings.Repeat("a", 63), true},
		{"ab", false},
		{strings.Repeat("a", 64), false},
		{"MyBucket", false},
		{"bucket_name", false},
		{"-bucket", false},
		{"bucket-", false},
		{".bucket", false},
		{"bucket.", false},
		{"my..bucket", false},
		{"my.-bucket", false},
		{"my-.bucket", false},
		{"192.168.1.10", false},
		{"192.168.1", true},
		{"buck et", false},
		{"bucket/x", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := ValidBucketName(tt.name); got != tt.ok {
			t.Errorf("ValidBucketName(%q) = %v, want %v", tt.name, got, tt.ok)
		}
	}
}

func TestBuckets(t *testing.T) {
	s, dir := newTestStore(t, Options{NoSync: true})
	if err := s.CreateBucket("Bad_Name", "", ""); !errors.Is(err, ErrInvalidBucketName) {
		t.Fatalf("invalid name: got %v, want ErrInvalidBucketName", err)
	}
	for _, n := range []string{"zeta", "alpha", "mid.bucket"} {
		mustCreateBucket(t, s, n)
	}
	if err := s.CreateBucket("alpha", "", ""); !errors.Is(err, ErrBucketExists) {
		t.Fatalf("duplicate: got %v, want ErrBucketExists", err)
	}
	b, err := s.GetBucket("alpha")
	if err != nil {
		t.Fatal(err)
	}
	if b.Name != "alpha" || b.LocationConstraint != "us-south" || b.ServiceInstance != "instance-1" || b.Created.IsZero() {
		t.Fatalf("GetBucket = %+v", b)
	}
	if _, err := s.GetBucket("nope"); !errors.Is(err, ErrNoSuchBucket) {
		t.Fatalf("missing bucket: got %v", err)
	}
	list, err := s.ListBuckets()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range list {
		names = append(names, b.Name)
	}
	if want := "alpha,mid.bucket,zeta"; strings.Join(names, ",") != want {
		t.Fatalf("ListBuckets = %v, want %s", names, want)
	}

	mustPut(t, s, "alpha", "k", "v")
	if err := s.DeleteBucket("alpha"); !errors.Is(err, ErrBucketNotEmpty) {
		t.Fatalf("delete non-empty: got %v", err)
	}
	if err := s.DeleteObject("alpha", "k", nil); err != nil {
		t.Fatal(err)
	}
	up, err := s.CreateMultipartUpload("alpha", "big", ObjectMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UploadPart("alpha", "big", up.ID, 1, strings.NewReader("part")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBucket("alpha"); err != nil {
		t.Fatalf("delete emptied bucket: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, uploadsDir, up.ID)); !os.IsNotExist(err) {
		t.Fatalf("upload dir of deleted bucket still exists (stat err %v)", err)
	}
	if err := s.DeleteBucket("alpha"); !errors.Is(err, ErrNoSuchBucket) {
		t.Fatalf("delete twice: got %v", err)
	}
	// The name is free again and the new bucket starts empty.
	mustCreateBucket(t, s, "alpha")
	if res, err := s.ListObjects("alpha", ListParams{}); err != nil || len(res.Objects) != 0 {
		t.Fatalf("recreated bucket lists %+v, %v", res, err)
	}
	if ups, err := s.ListMultipartUploads("alpha"); err != nil || len(ups) != 0 {
		t.Fatalf("recreated bucket has uploads %+v, %v", ups, err)
	}
}

func TestRestartPersistence(t *testing.T) {
	dir := t.TempDir()
	// Synced writes (the default) with small parts allowed.
	opts := Options{MinPartSize: 4}
	s, err := OpenWithOptions(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = s.Close()
		}
	})
	mustCreateBucket(t, s, "one")
	mustCreateBucket(t, s, "two")
	put := mustPut(t, s, "one", "a/b", "persisted body")
	if _, err := s.PutObject("two", "meta", strings.NewReader("m"), ObjectMeta{ContentType: "x/y", Metadata: map[string]string{"uid": "1000"}}, nil); err != nil {
		t.Fatal(err)
	}
	up, err := s.CreateMultipartUpload("two", "mp", ObjectMeta{ContentType: "video/mp4"})
	if err != nil {
		t.Fatal(err)
	}
	p1, err := s.UploadPart("two", "mp", up.ID, 1, strings.NewReader("part one"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true

	s2, err := OpenWithOptions(dir, opts)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	if bs, err := s2.ListBuckets(); err != nil || len(bs) != 2 {
		t.Fatalf("buckets after restart: %v, %v", bs, err)
	}
	got, data := mustRead(t, s2, "one", "a/b")
	if data != "persisted body" || got.ETag != put.ETag || !got.LastModified.Equal(put.LastModified) {
		t.Fatalf("after restart: %+v %q, want %+v", got, data, put)
	}
	if h, err := s2.HeadObject("two", "meta"); err != nil || h.ContentType != "x/y" || h.Metadata["uid"] != "1000" {
		t.Fatalf("metadata after restart: %+v, %v", h, err)
	}
	parts, err := s2.ListParts("two", "mp", up.ID)
	if err != nil || len(parts) != 1 || parts[0].ETag != p1.ETag {
		t.Fatalf("parts after restart: %+v, %v", parts, err)
	}
	if _, err := s2.UploadPart("two", "mp", up.ID, 2, strings.NewReader(" and two")); err != nil {
		t.Fatal(err)
	}
	obj, err := s2.CompleteMultipartUpload("two", "mp", up.ID, []Part{{Number: 1, ETag: p1.ETag}, {Number: 2, ETag: md5hex(" and two")}}, nil)
	if err != nil {
		t.Fatalf("complete after restart: %v", err)
	}
	if _, data := mustRead(t, s2, "two", "mp"); data != "part one and two" || obj.ContentType != "video/mp4" {
		t.Fatalf("completed object %+v %q", obj, data)
	}
}

func TestOpenCollectsGarbage(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenWithOptions(dir, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	mustCreateBucket(t, s, "bkt")
	mustPut(t, s, "bkt", "keep", "kept body")
	up, err := s.CreateMultipartUpload("bkt", "mp", ObjectMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UploadPart("bkt", "mp", up.ID, 1, strings.NewReader("kept part")); err != nil {
		t.Fatal(err)
	}
	empty, err := s.CreateMultipartUpload("bkt", "mp2", ObjectMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before := filesUnder(t, dir)
	// A crash may also lose the (unsynced) directory of a recorded upload.
	if err := os.Remove(filepath.Join(dir, uploadsDir, empty.ID)); err != nil {
		t.Fatal(err)
	}

	// What a crash can leave behind: a temp file, an unreferenced blob, a
	// stray part file and the directory of a finished upload.
	stray := []string{
		filepath.Join(tmpDir, "put-123"),
		filepath.Join(blobsDir, "ab", "ab000000000000000000000000000000"),
		filepath.Join(uploadsDir, up.ID, "00002-999"),
		filepath.Join(uploadsDir, "deadbeef", "00001-1"),
	}
	for _, p := range stray {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("junk"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s2, err := OpenWithOptions(dir, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	if after := filesUnder(t, dir); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("files after reopen:\n%v\nwant:\n%v", after, before)
	}
	if _, err := os.Stat(filepath.Join(dir, uploadsDir, "deadbeef")); !os.IsNotExist(err) {
		t.Fatalf("stale upload dir survived: %v", err)
	}
	if _, data := mustRead(t, s2, "bkt", "keep"); data != "kept body" {
		t.Fatalf("kept object = %q", data)
	}
	if _, err := s2.UploadPart("bkt", "mp2", empty.ID, 1, strings.NewReader("late part")); err != nil {
		t.Fatalf("upload whose directory was lost: %v", err)
	}
}

func TestBlobsCleanedUp(t *testing.T) {
	s, dir := newTestStore(t, Options{NoSync: true, MinPartSize: 4})
	mustCreateBucket(t, s, "bkt")
	blobs := func() int { return len(filesUnder(t, filepath.Join(dir, blobsDir))) }
	put := func(body string) func() error {
		return func() error {
			_, err := s.PutObject("bkt", "a", strings.NewReader(body), ObjectMeta{}, nil)
			return err
		}
	}
	uploads := func() int { return len(filesUnder(t, filepath.Join(dir, uploadsDir))) }
	steps := []struct {
		name             string
		do               func() error
		blobs, partFiles int
	}{
		{"put", put("one"), 1, 0},
		{"overwrite", put("two"), 1, 0},
		{"overwrite with empty", put(""), 0, 0},
		{"put again", put("three"), 1, 0},
		{"copy", func() error { _, err := s.CopyObject("bkt", "a", "bkt", "b", nil, nil); return err }, 2, 0},
		{"copy onto itself", func() error {
			_, err := s.CopyObject("bkt", "a", "bkt", "a", &ObjectMeta{ContentType: "x"}, nil)
			return err
		}, 2, 0},
		{"refused overwrite", func() error {
			_, err := s.PutObject("bkt", "a", strings.NewReader("four"), ObjectMeta{}, func(*Object) error { return ErrPreconditionFailed })
			if !errors.Is(err, ErrPreconditionFailed) {
				return errors.New("precondition did not refuse")
			}
			return nil
		}, 2, 0},
		{"delete", func() error { return s.DeleteObject("bkt", "b", nil) }, 1, 0},
		{"upload parts", func() error {
			up, err := s.CreateMultipartUpload("bkt", "mp", ObjectMeta{})
			if err != nil {
				return err
			}
			for i, body := range []string{"aaaa", "bbbb", "cccc"} {
				if _, err := s.UploadPart("bkt", "mp", up.ID, i+1, strings.NewReader(body)); err != nil {
					return err
				}
			}
			// Replacing a part removes the replaced part's file.
			_, err = s.UploadPart("bkt", "mp", up.ID, 2, strings.NewReader("BBBB"))
			return err
		}, 1, 3},
		{"abort", func() error {
			ups, err := s.ListMultipartUploads("bkt")
			if err != nil || len(ups) != 1 {
				return errors.New("expected one upload")
			}
			return s.AbortMultipartUpload("bkt", "mp", ups[0].ID)
		}, 1, 0},
		{"complete over existing", func() error {
			up, err := s.CreateMultipartUpload("bkt", "a", ObjectMeta{})
			if err != nil {
				return err
			}
			var parts []Part
			for i, body := range []string{"aaaa", "bb"} {
				p, err := s.UploadPart("bkt", "a", up.ID, i+1, strings.NewReader(body))
				if err != nil {
					return err
				}
				parts = append(parts, p)
			}
			_, err = s.CompleteMultipartUpload("bkt", "a", up.ID, parts, nil)
			return err
		}, 1, 0},
		{"delete last", func() error { return s.DeleteObject("bkt", "a", nil) }, 0, 0},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := blobs(); got != st.blobs {
			t.Fatalf("after %s: %d blob files, want %d", st.name, got, st.blobs)
		}
		if got := uploads(); got != st.partFiles {
			t.Fatalf("after %s: %d part files, want %d", st.name, got, st.partFiles)
		}
		if tmp := filesUnder(t, filepath.Join(dir, tmpDir)); len(tmp) != 0 {
			t.Fatalf("after %s: temp files %v", st.name, tmp)
		}
	}
}
