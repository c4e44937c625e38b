package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/volume"
)

// streamUpload uploads a file as a multipart upload while it is being
// written. Memory is bounded: the part being filled and every part in flight
// hold PartSize of the mount's budget, at most UploadConcurrency parts are in
// flight, and the writer blocks when either limit is reached.
type streamUpload struct {
	fs       *FS
	key      string
	uploadID string
	metadata map[string]string
	partSize int64

	// Used only by the writer (under File.mu).
	cur       []byte // the part being filled; PartSize of budget is held while non-nil
	submitted int32

	slots  chan struct{} // one token per part in flight
	wg     sync.WaitGroup
	ctx    context.Context // uploads outlive the write request that queued them; ends at unmount
	cancel context.CancelFunc

	mu    sync.Mutex
	parts []cos.CompletedPart // guarded by mu
	err   error               // guarded by mu: the first part failure
}

func (f *FS) startStream(ctx context.Context, key string, o cos.PutOptions) (*streamUpload, error) {
	id, err := f.store.CreateMultipart(ctx, key, o)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(f.life)
	f.parts.open()
	return &streamUpload{
		fs: f, key: key, uploadID: id, metadata: o.Metadata, partSize: f.opts.PartSize,
		slots: make(chan struct{}, f.opts.UploadConcurrency), ctx: sctx, cancel: cancel,
	}, nil
}

// fail records err as the upload's failure (the first one wins): once a
// write could not be taken completely the object can no longer be right.
func (s *streamUpload) fail(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
	return err
}

func (s *streamUpload) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// adopt takes over an in-memory buffer holding budget bytes: its full parts
// are uploaded in place and the tail becomes the part being filled.
func (s *streamUpload) adopt(ctx context.Context, buf []byte, budget int64) error {
	full := int64(len(buf)) / s.partSize * s.partSize
	if full == 0 {
		if err := s.write(ctx, buf); err != nil {
			s.fs.mem.release(budget)
			return err
		}
		s.fs.mem.release(budget)
		return nil
	}
	tail := append([]byte(nil), buf[full:]...) // small: below one part
	for off := int64(0); off < full; off += s.partSize {
		carry := s.partSize
		if off+s.partSize == full {
			carry = budget - (full - s.partSize) // the last part carries the rest of the buffer's budget
		}
		if err := s.submit(ctx, buf[off:off+s.partSize], carry); err != nil {
			s.fs.mem.release(budget - off - carry) // the parts not submitted yet
			return err
		}
	}
	return s.write(ctx, tail)
}

// copyObject makes the object's current bytes (size, ETag etag) the first
// parts of the upload, server-side, in ranges of at most volume.MaxPartSize that
// are all at least volume.MinPartSize (size must be). It runs before anything is
// written to the upload.
func (s *streamUpload) copyObject(ctx context.Context, size int64, etag string) error {
	n := (size + volume.MaxPartSize - 1) / volume.MaxPartSize
	per := size / n
	for i := int64(0); i < n; i++ {
		first, last := i*per, (i+1)*per-1
		if i == n-1 {
			last = size - 1
		}
		s.submitted++
		p, err := s.fs.store.UploadPartCopy(ctx, s.key, s.uploadID, s.submitted, s.key, first, last, etag)
		if err != nil {
			return fmt.Errorf("continue %q: copy part %d: %w", s.key, s.submitted, err)
		}
		s.mu.Lock()
		s.parts = append(s.parts, p)
		s.mu.Unlock()
	}
	return nil
}

// write appends data, submitting every part that fills up.
func (s *streamUpload) write(ctx context.Context, data []byte) error {
	for len(data) > 0 {
		if err := s.failed(); err != nil {
			return err
		}
		if s.cur == nil {
			s.cur = s.newPart(ctx)
			if s.cur == nil {
				return s.fail(ctx.Err())
			}
		}
		n := copy(s.cur[len(s.cur):cap(s.cur)], data)
		s.cur = s.cur[:len(s.cur)+n]
		data = data[n:]
		if int64(len(s.cur)) == s.partSize {
			part := s.cur
			s.cur = nil
			if err := s.submit(ctx, part, s.partSize); err != nil {
				return s.fail(err)
			}
		}
	}
	return nil
}

// newPart returns an empty part buffer holding PartSize of budget: one that
// an uploaded part gave back (already faulted in), or a new one once the
// budget has room; nil if ctx ends first.
func (s *streamUpload) newPart(ctx context.Context) []byte {
	if b := s.fs.parts.take(); b != nil {
		return b[:0]
	}
	if err := s.fs.mem.acquire(ctx, s.partSize); err != nil {
		return nil
	}
	return make([]byte, 0, s.partSize)
}

// freePart gives back a part buffer with budget bytes of budget: a whole
// part buffer of its own goes back to the pool, anything else (a part of an
// adopted in-memory buffer) returns its budget.
func (s *streamUpload) freePart(data []byte, budget int64) {
	if int64(cap(data)) == s.partSize && budget == s.partSize {
		s.fs.parts.put(data[:s.partSize])
		return
	}
	s.fs.mem.release(budget)
}

// submit uploads one part in the background; the part's budget is released
// when the upload ends. On error the budget is released here.
func (s *streamUpload) submit(ctx context.Context, data []byte, budget int64) error {
	if s.submitted >= maxParts {
		s.fs.mem.release(budget)
		return fmt.Errorf("multipart upload of %q: more than %d parts (raise part_size)", s.key, maxParts)
	}
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		s.fs.mem.release(budget)
		return ctx.Err()
	}
	s.submitted++
	num := s.submitted
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.slots }()
		defer s.freePart(data, budget)
		ctx, cancel := context.WithTimeout(s.ctx, transferTimeout(int64(len(data))))
		defer cancel()
		p, err := s.fs.store.UploadPart(ctx, s.key, s.uploadID, num, bytes.NewReader(data), int64(len(data)))
		s.mu.Lock()
		defer s.mu.Unlock()
		if err != nil {
			if s.err == nil {
				s.err = fmt.Errorf("upload part %d: %w", num, err)
			}
			return
		}
		s.parts = append(s.parts, p)
	}()
	return nil
}

// finish uploads the last part, waits for all parts and completes the
// upload; on any failure the upload is aborted.
func (s *streamUpload) finish(ctx context.Context) (cos.ObjectInfo, error) {
	if s.cur != nil && (len(s.cur) > 0 || s.submitted == 0) {
		part := s.cur
		s.cur = nil
		if err := s.submit(ctx, part, s.partSize); err != nil {
			s.abort()
			return cos.ObjectInfo{}, err
		}
	} else if s.cur != nil {
		s.freePart(s.cur, s.partSize)
		s.cur = nil
	}
	s.wg.Wait()
	if err := s.failed(); err != nil {
		s.abort()
		return cos.ObjectInfo{}, err
	}
	sort.Slice(s.parts, func(i, j int) bool { return s.parts[i].PartNumber < s.parts[j].PartNumber })
	info, err := s.fs.store.CompleteMultipart(ctx, s.key, s.uploadID, s.parts)
	if err != nil {
		s.abort()
		return cos.ObjectInfo{}, err
	}
	s.cancel()
	s.fs.parts.close()
	return info, nil
}

// abort stops the uploads in flight, gives back memory and aborts the
// upload on the server so that no parts linger (and cost money).
func (s *streamUpload) abort() {
	s.cancel()
	if s.cur != nil {
		s.freePart(s.cur, s.partSize)
		s.cur = nil
	}
	s.wg.Wait()
	s.fs.parts.close()
	if err := s.fs.store.AbortMultipart(context.Background(), s.key, s.uploadID); err != nil && !errors.Is(err, cos.ErrNotFound) {
		s.fs.log.Error(err, "abort multipart upload failed", "key", s.key)
	}
}

// uploadFile uploads a temporary file: one PUT below the multipart
// threshold, else parts read straight from the file, several at once (no
// memory buffers are needed).
func (f *FS) uploadFile(ctx context.Context, key string, file *os.File, size int64, o cos.PutOptions) (cos.ObjectInfo, error) {
	if size < f.opts.MultipartThreshold {
		return f.store.Put(ctx, key, io.NewSectionReader(file, 0, size), size, o)
	}
	partSize := f.opts.PartSize
	if min := (size + maxParts - 1) / maxParts; min > partSize {
		partSize = min
	}
	id, err := f.store.CreateMultipart(ctx, key, o)
	if err != nil {
		return cos.ObjectInfo{}, err
	}
	n := int((size + partSize - 1) / partSize)
	parts := make([]cos.CompletedPart, n)
	errs := make([]error, n)
	sem := make(chan struct{}, f.opts.UploadConcurrency)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		off := int64(i) * partSize
		l := partSize
		if off+l > size {
			l = size - off
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(i int, off, l int64) {
			defer wg.Done()
			defer func() { <-sem }()
			parts[i], errs[i] = f.store.UploadPart(ctx, key, id, int32(i+1), io.NewSectionReader(file, off, l), l)
		}(i, off, l)
	}
	wg.Wait()
	err = errors.Join(errs...)
	var info cos.ObjectInfo
	if err == nil {
		info, err = f.store.CompleteMultipart(ctx, key, id, parts)
	}
	if err != nil {
		if aerr := f.store.AbortMultipart(context.Background(), key, id); aerr != nil && !errors.Is(aerr, cos.ErrNotFound) {
			f.log.Error(aerr, "abort multipart upload failed", "key", key)
		}
		return cos.ObjectInfo{}, err
	}
	return info, nil
}
