package store

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// ifNoneMatchStar refuses to overwrite an existing object.
func ifNoneMatchStar(existing *Object) error {
	if existing != nil {
		return ErrPreconditionFailed
	}
	return nil
}

func TestCreateIfAbsentExactlyOneWins(t *testing.T) {
	s, dir := newTestStore(t, Options{NoSync: true, MinPartSize: 1})
	mustCreateBucket(t, s, "bkt")
	const workers = 16
	ops := []struct {
		name string
		do   func(i int, key string) (Object, error)
	}{
		{"put", func(i int, key string) (Object, error) {
			return s.PutObject("bkt", key, strings.NewReader(fmt.Sprintf("writer %d", i)), ObjectMeta{}, ifNoneMatchStar)
		}},
		{"copy", func(i int, key string) (Object, error) {
			src := fmt.Sprintf("src-%d", i)
			if _, err := s.PutObject("bkt", src, strings.NewReader(fmt.Sprintf("writer %d", i)), ObjectMeta{}, nil); err != nil {
				return Object{}, err
			}
			return s.CopyObject("bkt", src, "bkt", key, nil, ifNoneMatchStar)
		}},
		{"complete", func(i int, key string) (Object, error) {
			up, err := s.CreateMultipartUpload("bkt", key, ObjectMeta{})
			if err != nil {
				return Object{}, err
			}
			p, err := s.UploadPart("bkt", key, up.ID, 1, strings.NewReader(fmt.Sprintf("writer %d", i)))
			if err != nil {
				return Object{}, err
			}
			obj, err := s.CompleteMultipartUpload("bkt", key, up.ID, []Part{p}, ifNoneMatchStar)
			if err != nil {
				if aerr := s.AbortMultipartUpload("bkt", key, up.ID); aerr != nil {
					return Object{}, aerr
				}
			}
			return obj, err
		}},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			key := "contended-" + op.name
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				winners []int
				winObj  Object
				others  []error
			)
			start := make(chan struct{})
			for i := 0; i < workers; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					obj, err := op.do(i, key)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						winners = append(winners, i)
						winObj = obj
					case !errors.Is(err, ErrPreconditionFailed):
						others = append(others, err)
					}
				}()
			}
			close(start)
			wg.Wait()
			if len(others) > 0 {
				t.Fatalf("unexpected errors: %v", others)
			}
			if len(winners) != 1 {
				t.Fatalf("%d writers won (%v), want exactly one", len(winners), winners)
			}
			got, data := mustRead(t, s, "bkt", key)
			if data != fmt.Sprintf("writer %d", winners[0]) || got.ETag != winObj.ETag {
				t.Fatalf("stored %q etag %s, winner was %d with etag %s", data, got.ETag, winners[0], winObj.ETag)
			}
		})
	}
	if ups, err := s.ListMultipartUploads("bkt"); err != nil || len(ups) != 0 {
		t.Fatalf("uploads left: %+v, %v", ups, err)
	}
	if files := filesUnder(t, filepath.Join(dir, uploadsDir)); len(files) != 0 {
		t.Fatalf("part files left: %v", files)
	}
	// One blob per live object: the three contended keys and the copy sources.
	res, err := s.ListObjects("bkt", ListParams{})
	if err != nil {
		t.Fatal(err)
	}
	if blobs := filesUnder(t, filepath.Join(dir, blobsDir)); len(blobs) != len(res.Objects) {
		t.Fatalf("%d blobs for %d objects", len(blobs), len(res.Objects))
	}
}

// TestConcurrentWritersAndReaders runs writers of distinct keys next to
// readers and overwriters of one hot key; every read must return a complete
// version whose body matches the ETag returned with it. Run with -race.
func TestConcurrentWritersAndReaders(t *testing.T) {
	s, dir := newTestStore(t, Options{NoSync: true})
	mustCreateBucket(t, s, "bkt")
	const writers, perWriter, hotWrites = 6, 40, 60
	mustPut(t, s, "bkt", "hot", "hot version -1")

	var wg sync.WaitGroup
	errs := make(chan error, writers+4)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				key := fmt.Sprintf("w%d/obj%03d", w, i)
				body := strings.Repeat(key, 1+i%7)
				obj, err := s.PutObject("bkt", key, strings.NewReader(body), ObjectMeta{}, nil)
				if err != nil {
					errs <- err
					return
				}
				if obj.ETag != md5hex(body) {
					errs <- fmt.Errorf("%s: etag %s", key, obj.ETag)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		for i := 0; i < hotWrites; i++ {
			if _, err := s.PutObject("bkt", "hot", strings.NewReader(fmt.Sprintf("hot version %d", i)), ObjectMeta{}, nil); err != nil {
				errs <- err
				return
			}
		}
	}()
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				obj, body, err := s.OpenObject("bkt", "hot")
				if err != nil {
					errs <- fmt.Errorf("read hot: %w", err)
					return
				}
				data, err := io.ReadAll(body)
				body.Close()
				if err != nil {
					errs <- err
					return
				}
				if !strings.HasPrefix(string(data), "hot version ") || md5hex(string(data)) != obj.ETag {
					errs <- fmt.Errorf("read %q with etag %s", data, obj.ETag)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	res, err := s.ListObjects("bkt", ListParams{Prefix: "w", MaxKeys: MaxListKeys})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Objects) != writers*perWriter {
		t.Fatalf("listed %d objects, want %d", len(res.Objects), writers*perWriter)
	}
	if _, data := mustRead(t, s, "bkt", "hot"); data != fmt.Sprintf("hot version %d", hotWrites-1) {
		t.Fatalf("hot = %q", data)
	}
	if blobs := filesUnder(t, filepath.Join(dir, blobsDir)); len(blobs) != writers*perWriter+1 {
		t.Fatalf("%d blobs, want %d", len(blobs), writers*perWriter+1)
	}
}
