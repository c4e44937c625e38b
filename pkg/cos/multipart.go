package cos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"k8s.io/klog/v2"
)

// Multipart limits of COS (PROTOCOLS.md section 3).
const (
	MinPartSize     = 5 << 20  // every part but the last
	MaxPartSize     = 5 << 30  // and the largest single PUT
	MaxParts        = 10000    // parts per upload
	DefaultPartSize = 16 << 20 // UploadStream's part size when given 0

	// abortTimeout bounds the cleanup of a failed upload, which runs even
	// when the caller's context is already done.
	abortTimeout = 30 * time.Second
)

// CreateMultipartUpload starts a multipart upload with o's content type and
// metadata. o's IfMatch/IfNoneMatch are kept by the client and sent with
// CompleteMultipartUpload, where COS evaluates them.
func (c *Client) CreateMultipartUpload(ctx context.Context, bucket, key string, o PutOptions) (string, error) {
	in := &s3.CreateMultipartUploadInput{Bucket: &bucket, Key: &key, Metadata: o.Metadata}
	if o.ContentType != "" {
		in.ContentType = aws.String(o.ContentType)
	}
	var id string
	err := c.call(ctx, "CreateMultipartUpload", bucket, key, nil, 0, func(ctx context.Context) error {
		out, err := c.s3.CreateMultipartUpload(ctx, in)
		if err != nil {
			return err
		}
		id = aws.ToString(out.UploadId)
		return nil
	})
	if err != nil {
		return "", err
	}
	if c.uploads != nil {
		c.uploads.Started(bucket, key, id)
	}
	if o.IfMatch != "" || o.IfNoneMatch != "" {
		c.mu.Lock()
		c.conditions[id] = PutOptions{IfMatch: o.IfMatch, IfNoneMatch: o.IfNoneMatch}
		c.mu.Unlock()
	}
	return id, nil
}

// UploadPart uploads size bytes from body as part partNumber (1..10000).
func (c *Client) UploadPart(ctx context.Context, bucket, key, uploadID string, partNumber int32, body io.ReadSeeker, size int64) (CompletedPart, error) {
	in := &s3.UploadPartInput{
		Bucket:        &bucket,
		Key:           &key,
		UploadId:      &uploadID,
		PartNumber:    aws.Int32(partNumber),
		Body:          body,
		ContentLength: aws.Int64(size),
	}
	part := CompletedPart{PartNumber: partNumber}
	err := c.call(ctx, "UploadPart", bucket, key, body, size, func(ctx context.Context) error {
		out, err := c.s3.UploadPart(ctx, in)
		if err != nil {
			return err
		}
		part.ETag = unquote(aws.ToString(out.ETag))
		return nil
	})
	return part, err
}

// CompleteMultipartUpload assembles the parts (sorted by number here, as S3
// requires ascending order) into the object.
func (c *Client) CompleteMultipartUpload(ctx context.Context, bucket, key, uploadID string, parts []CompletedPart) (ObjectInfo, error) {
	c.mu.Lock()
	cond := c.conditions[uploadID]
	c.mu.Unlock()

	sorted := append([]CompletedPart(nil), parts...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].PartNumber < sorted[j].PartNumber })
	cps := make([]types.CompletedPart, len(sorted))
	for i, p := range sorted {
		cps[i] = types.CompletedPart{PartNumber: aws.Int32(p.PartNumber), ETag: aws.String(quote(p.ETag))}
	}
	in := &s3.CompleteMultipartUploadInput{
		Bucket:          &bucket,
		Key:             &key,
		UploadId:        &uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: cps},
	}
	if cond.IfMatch != "" {
		in.IfMatch = aws.String(quote(cond.IfMatch))
	}
	if cond.IfNoneMatch != "" {
		in.IfNoneMatch = aws.String(quote(cond.IfNoneMatch))
	}
	info := ObjectInfo{Key: key}
	err := c.call(ctx, "CompleteMultipartUpload", bucket, key, nil, 0, func(ctx context.Context) error {
		out, err := c.s3.CompleteMultipartUpload(ctx, in)
		if err != nil {
			return err
		}
		info.ETag = unquote(aws.ToString(out.ETag))
		info.LastModified = responseDate(out.ResultMetadata)
		return nil
	})
	if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrPreconditionFailed) {
		// The upload no longer exists (completed, or S3 dropped it); a
		// failed condition also ends it, as the caller has to abort.
		c.forget(uploadID)
	}
	if (err == nil || errors.Is(err, ErrNotFound)) && c.uploads != nil {
		c.uploads.Ended(uploadID)
	}
	return info, err
}

// AbortMultipartUpload discards an upload and its parts. An upload that no
// longer exists is not an error.
func (c *Client) AbortMultipartUpload(ctx context.Context, bucket, key, uploadID string) error {
	err := c.call(ctx, "AbortMultipartUpload", bucket, key, nil, 0, func(ctx context.Context) error {
		_, err := c.s3.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &bucket, Key: &key, UploadId: &uploadID})
		return err
	})
	var e *Error
	if errors.As(err, &e) && e.Code == "NoSuchUpload" {
		err = nil
	}
	if err == nil {
		c.forget(uploadID)
		if c.uploads != nil {
			c.uploads.Ended(uploadID)
		}
	}
	return err
}

func (c *Client) forget(uploadID string) {
	c.mu.Lock()
	delete(c.conditions, uploadID)
	c.mu.Unlock()
}

// abortQuietly cleans up after a failed upload. It must run even when ctx
// was canceled, so it detaches from ctx's cancellation.
func (c *Client) abortQuietly(ctx context.Context, bucket, key, uploadID string) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	if err := c.AbortMultipartUpload(actx, bucket, key, uploadID); err != nil {
		klog.ErrorS(err, "Could not abort a failed multipart upload; COS keeps its parts until a lifecycle rule or EmptyAndDeleteBucket removes them",
			"bucket", bucket, "key", key)
	}
}

// UploadStream uploads everything r yields. A stream that fits in one part
// is a single PUT; a longer one is a multipart upload whose parts go up
// concurrently. At most concurrency parts are in flight and at most
// concurrency+1 part buffers exist, so memory stays near
// (concurrency+1)*partSize. Any failure aborts the upload.
//
// partSize 0 means DefaultPartSize; it is raised to MinPartSize and capped at
// MaxPartSize. A stream longer than MaxParts parts fails with
// ErrInvalidArgument.
func (c *Client) UploadStream(ctx context.Context, bucket, key string, r io.Reader, o PutOptions, partSize int64, concurrency int) (ObjectInfo, error) {
	switch {
	case partSize == 0:
		partSize = DefaultPartSize
	case partSize < MinPartSize:
		partSize = MinPartSize
	case partSize > MaxPartSize:
		partSize = MaxPartSize
	}
	concurrency = max(concurrency, 1)

	readErr := func(err error) error {
		return &Error{Op: "UploadStream", Bucket: bucket, Key: key, Kind: ErrInvalidArgument, Message: "read source: " + err.Error(), Err: err}
	}
	// Read two parts ahead of any request: a stream of exactly one part
	// must still be a single PUT, which needs to see its end first.
	first := make([]byte, partSize)
	n, err := io.ReadFull(r, first)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return c.PutObject(ctx, bucket, key, bytes.NewReader(first[:n]), int64(n), o)
	}
	if err != nil {
		return ObjectInfo{}, readErr(err)
	}
	second := make([]byte, partSize)
	n2, err := io.ReadFull(r, second)
	if err == io.EOF {
		return c.PutObject(ctx, bucket, key, bytes.NewReader(first), partSize, o)
	}
	if err != nil && err != io.ErrUnexpectedEOF {
		return ObjectInfo{}, readErr(err)
	}
	lastRead := err // nil: maybe more to come; ErrUnexpectedEOF: second is the last part

	uploadID, err := c.CreateMultipartUpload(ctx, bucket, key, o)
	if err != nil {
		return ObjectInfo{}, err
	}
	u := &streamUpload{
		c: c, bucket: bucket, key: key, uploadID: uploadID, partSize: partSize,
		slots: make(chan struct{}, concurrency),
		free:  make(chan []byte, concurrency+1), // never blocks: it can hold every buffer
		limit: concurrency + 1,
		alloc: 2,
	}
	u.ctx, u.cancel = context.WithCancelCause(ctx)
	defer u.cancel(nil)

	total := partSize + int64(n2)
	u.send(first, partSize)
	if u.send(second, int64(n2)) && lastRead == nil {
		for {
			buf, ok := u.buffer()
			if !ok {
				break
			}
			n, err := io.ReadFull(r, buf)
			if n > 0 {
				total += int64(n)
				if !u.send(buf, int64(n)) {
					break
				}
			} else {
				u.free <- buf
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				u.fail(readErr(err))
				break
			}
		}
	}
	u.wg.Wait()

	if err := context.Cause(u.ctx); err != nil {
		c.abortQuietly(ctx, bucket, key, uploadID)
		var e *Error
		if !errors.As(err, &e) {
			err = &Error{Op: "UploadStream", Bucket: bucket, Key: key, Kind: ErrUnavailable, Err: err}
		}
		return ObjectInfo{}, err
	}
	info, err := c.CompleteMultipartUpload(ctx, bucket, key, uploadID, u.parts)
	if err != nil {
		c.abortQuietly(ctx, bucket, key, uploadID)
		return ObjectInfo{}, err
	}
	info.Size = total
	info.ContentType = o.ContentType
	info.Metadata = lowerKeys(o.Metadata)
	return info, nil
}

// streamUpload is the state of one UploadStream multipart upload.
type streamUpload struct {
	c                     *Client
	bucket, key, uploadID string
	partSize              int64

	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
	slots  chan struct{} // one token per part in flight
	free   chan []byte   // buffers whose part is done
	limit  int           // buffers that may exist
	alloc  int           // buffers made so far (only the reading goroutine touches it)

	mu    sync.Mutex
	parts []CompletedPart
	next  int32
}

// buffer returns a part buffer, reusing a finished part's when the limit is
// reached. ok is false when the upload already failed.
func (u *streamUpload) buffer() ([]byte, bool) {
	select {
	case b := <-u.free:
		return b, true
	default:
	}
	if u.alloc < u.limit {
		u.alloc++
		return make([]byte, u.partSize), true
	}
	select {
	case b := <-u.free:
		return b, true
	case <-u.ctx.Done():
		return nil, false
	}
}

// send uploads buf[:n] as the next part once a slot is free. It reports
// false when the upload has failed and reading should stop.
func (u *streamUpload) send(buf []byte, n int64) bool {
	select {
	case u.slots <- struct{}{}:
	case <-u.ctx.Done():
		return false
	}
	u.mu.Lock()
	if u.next >= MaxParts {
		u.mu.Unlock()
		<-u.slots
		u.fail(&Error{Op: "UploadStream", Bucket: u.bucket, Key: u.key, Kind: ErrInvalidArgument,
			Message: fmt.Sprintf("stream needs more than %d parts of %d bytes", MaxParts, u.partSize)})
		return false
	}
	u.next++
	number := u.next
	u.mu.Unlock()

	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		defer func() { <-u.slots }()
		part, err := u.c.UploadPart(u.ctx, u.bucket, u.key, u.uploadID, number, bytes.NewReader(buf[:n]), n)
		u.free <- buf
		if err != nil {
			u.fail(err)
			return
		}
		u.mu.Lock()
		u.parts = append(u.parts, part)
		u.mu.Unlock()
	}()
	return true
}

// fail records the first error and stops the other parts.
func (u *streamUpload) fail(err error) {
	if u.ctx.Err() == nil {
		u.cancel(err)
	}
}
