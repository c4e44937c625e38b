package cos

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"k8s.io/klog/v2"
)

// deleteBatch is S3's limit of keys per multi-object delete.
const deleteBatch = 1000

// HeadObject returns the object's size, ETag, Last-Modified, content type
// and user metadata.
func (c *Client) HeadObject(ctx context.Context, bucket, key string) (ObjectInfo, error) {
	var info ObjectInfo
	err := c.call(ctx, "HeadObject", bucket, key, nil, 0, func(ctx context.Context) error {
		out, err := c.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: &key})
		if err != nil {
			return err
		}
		info = ObjectInfo{
			Key:          key,
			Size:         aws.ToInt64(out.ContentLength),
			ETag:         unquote(aws.ToString(out.ETag)),
			LastModified: aws.ToTime(out.LastModified),
			ContentType:  aws.ToString(out.ContentType),
			Metadata:     lowerKeys(out.Metadata),
		}
		return nil
	})
	return info, err
}

// GetObject streams the object, or the range o selects. The ObjectInfo's
// Size is the whole object's size even for a ranged read. The caller must
// close the body; the observer sees the bytes read when it does.
func (c *Client) GetObject(ctx context.Context, bucket, key string, o GetOptions) (io.ReadCloser, ObjectInfo, error) {
	in := &s3.GetObjectInput{Bucket: &bucket, Key: &key}
	if o.Offset < 0 {
		err := &Error{Op: "GetObject", Bucket: bucket, Key: key, Kind: ErrInvalidArgument, Message: "negative offset"}
		c.observe("GetObject", 0, err)
		return nil, ObjectInfo{}, err
	}
	// Length <= 0 reads to the end; that covers "whole object" (offset 0).
	switch {
	case o.Length > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", o.Offset, o.Offset+o.Length-1))
	case o.Offset > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", o.Offset))
	}
	if o.IfMatch != "" {
		in.IfMatch = aws.String(quote(o.IfMatch))
	}
	var out *s3.GetObjectOutput
	err := c.attempt(ctx, "GetObject", bucket, key, nil, func(ctx context.Context) error {
		var err error
		out, err = c.s3.GetObject(ctx, in)
		return err
	})
	if err != nil {
		c.observe("GetObject", 0, err)
		return nil, ObjectInfo{}, err
	}
	info := ObjectInfo{
		Key:          key,
		Size:         aws.ToInt64(out.ContentLength),
		ETag:         unquote(aws.ToString(out.ETag)),
		LastModified: aws.ToTime(out.LastModified),
		ContentType:  aws.ToString(out.ContentType),
		Metadata:     lowerKeys(out.Metadata),
	}
	if total, ok := rangeTotal(aws.ToString(out.ContentRange)); ok {
		info.Size = total
	}
	body := &observedBody{ReadCloser: out.Body, c: c, ctx: ctx, bucket: bucket, key: key,
		etag: info.ETag, next: o.Offset, end: -1}
	if o.Length > 0 {
		body.end = o.Offset + o.Length - 1
	}
	return body, info, nil
}

// rangeTotal extracts the complete length from "bytes a-b/total".
func rangeTotal(cr string) (int64, bool) {
	i := strings.LastIndexByte(cr, '/')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(cr[i+1:], 10, 64)
	return n, err == nil
}

// observedBody reports a GET to the observer when the caller closes it, so
// the byte count is what was actually read. When the connection fails in
// the middle of the body (a reset, a timeout), it asks again for the rest,
// on the condition of the same ETag, up to maxResumes times; a failure it
// cannot mend is an *Error of kind ErrUnavailable, never a bare network
// error.
type observedBody struct {
	io.ReadCloser
	c           *Client
	ctx         context.Context
	bucket, key string
	etag        string
	next, end   int64 // the next offset to read; the last one wanted (-1: to the end)
	resumes     int
	n           atomic.Int64
	closed      atomic.Bool
}

// maxResumes bounds how often one body is asked for again.
const maxResumes = 3

func (b *observedBody) Read(p []byte) (int, error) {
	for {
		n, err := b.ReadCloser.Read(p)
		b.n.Add(int64(n))
		b.next += int64(n)
		if err == nil || errors.Is(err, io.EOF) || n > 0 {
			if err != nil && !errors.Is(err, io.EOF) && n > 0 {
				// Hand out what arrived; the next Read meets the error again.
				return n, nil
			}
			return n, err
		}
		if b.ctx.Err() != nil || b.resumes >= maxResumes || b.etag == "" || (b.end >= 0 && b.next > b.end) {
			return 0, &Error{Op: "GetObject", Bucket: b.bucket, Key: b.key, Kind: ErrUnavailable, Err: err}
		}
		b.resumes++
		klog.V(2).InfoS("GET body failed; asking for the rest", "bucket", b.bucket, "key", b.key, "offset", b.next, "err", err)
		if rerr := b.resume(); rerr != nil {
			return 0, rerr
		}
	}
}

// resume replaces the failed body with a GET of the rest of the range.
func (b *observedBody) resume() error {
	rng := fmt.Sprintf("bytes=%d-", b.next)
	if b.end >= 0 {
		rng = fmt.Sprintf("bytes=%d-%d", b.next, b.end)
	}
	in := &s3.GetObjectInput{Bucket: &b.bucket, Key: &b.key, Range: aws.String(rng), IfMatch: aws.String(quote(b.etag))}
	var out *s3.GetObjectOutput
	err := b.c.attempt(b.ctx, "GetObject", b.bucket, b.key, nil, func(ctx context.Context) error {
		var err error
		out, err = b.c.s3.GetObject(ctx, in)
		return err
	})
	if err != nil {
		return err
	}
	_ = b.ReadCloser.Close()
	b.ReadCloser = out.Body
	return nil
}

func (b *observedBody) Close() error {
	err := b.ReadCloser.Close()
	if b.closed.CompareAndSwap(false, true) {
		b.c.observe("GetObject", b.n.Load(), nil)
	}
	return err
}

// PutObject uploads size bytes from body as one object (at most 5 GiB). The
// result's LastModified is the server's Date for the response.
func (c *Client) PutObject(ctx context.Context, bucket, key string, body io.ReadSeeker, size int64, o PutOptions) (ObjectInfo, error) {
	in := &s3.PutObjectInput{
		Bucket:        &bucket,
		Key:           &key,
		Body:          body,
		ContentLength: aws.Int64(size),
		Metadata:      o.Metadata,
	}
	if o.ContentType != "" {
		in.ContentType = aws.String(o.ContentType)
	}
	if o.IfMatch != "" {
		in.IfMatch = aws.String(quote(o.IfMatch))
	}
	if o.IfNoneMatch != "" {
		in.IfNoneMatch = aws.String(quote(o.IfNoneMatch))
	}
	info := ObjectInfo{Key: key, Size: size, ContentType: o.ContentType, Metadata: lowerKeys(o.Metadata)}
	err := c.call(ctx, "PutObject", bucket, key, body, size, func(ctx context.Context) error {
		out, err := c.s3.PutObject(ctx, in)
		if err != nil {
			return err
		}
		info.ETag = unquote(aws.ToString(out.ETag))
		info.LastModified = responseDate(out.ResultMetadata)
		return nil
	})
	return info, err
}

// responseDate is the Date header of the raw response, the best available
// stand-in for Last-Modified on operations that do not return it.
func responseDate(md middleware.Metadata) time.Time {
	resp := awsmiddleware.GetRawResponse(md)
	if r, ok := resp.(*smithyhttp.Response); ok && r != nil && r.Response != nil {
		if t, err := http.ParseTime(r.Header.Get("Date")); err == nil {
			return t
		}
	}
	return time.Time{}
}

// ListObjects returns one ListObjectsV2 page. Keys are requested URL-encoded
// (so keys with characters XML cannot carry survive) and decoded here.
func (c *Client) ListObjects(ctx context.Context, bucket string, o ListOptions) (ListPage, error) {
	in := &s3.ListObjectsV2Input{Bucket: &bucket, EncodingType: types.EncodingTypeUrl}
	if o.Prefix != "" {
		in.Prefix = aws.String(o.Prefix)
	}
	if o.Delimiter != "" {
		in.Delimiter = aws.String(o.Delimiter)
	}
	if o.ContinuationToken != "" {
		in.ContinuationToken = aws.String(o.ContinuationToken)
	}
	if o.StartAfter != "" {
		in.StartAfter = aws.String(o.StartAfter)
	}
	if o.MaxKeys > 0 {
		in.MaxKeys = aws.Int32(o.MaxKeys)
	}
	var page ListPage
	err := c.call(ctx, "ListObjectsV2", bucket, o.Prefix, nil, 0, func(ctx context.Context) error {
		out, err := c.s3.ListObjectsV2(ctx, in)
		if err != nil {
			return err
		}
		decode := func(s string) (string, error) { return s, nil }
		if out.EncodingType == types.EncodingTypeUrl {
			// S3's "url" encoding is form-style (a space is "+").
			decode = url.QueryUnescape
		}
		page = ListPage{Objects: make([]ObjectInfo, 0, len(out.Contents))}
		for _, obj := range out.Contents {
			k, err := decode(aws.ToString(obj.Key))
			if err != nil {
				return fmt.Errorf("decode listed key: %w", err)
			}
			page.Objects = append(page.Objects, ObjectInfo{
				Key:          k,
				Size:         aws.ToInt64(obj.Size),
				ETag:         unquote(aws.ToString(obj.ETag)),
				LastModified: aws.ToTime(obj.LastModified),
			})
		}
		for _, p := range out.CommonPrefixes {
			s, err := decode(aws.ToString(p.Prefix))
			if err != nil {
				return fmt.Errorf("decode listed prefix: %w", err)
			}
			page.CommonPrefixes = append(page.CommonPrefixes, s)
		}
		if aws.ToBool(out.IsTruncated) {
			page.NextContinuationToken = aws.ToString(out.NextContinuationToken)
		}
		return nil
	})
	return page, err
}

// DeleteObject deletes one object. A missing key is not an error.
func (c *Client) DeleteObject(ctx context.Context, bucket, key string) error {
	err := c.call(ctx, "DeleteObject", bucket, key, nil, 0, func(ctx context.Context) error {
		_, err := c.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: &key})
		return err
	})
	var e *Error
	if errors.As(err, &e) && e.Code == "NoSuchKey" {
		return nil
	}
	return err
}

// DeleteObjects deletes keys in batches of 1000. Keys that are already gone
// are not errors. Keys COS refused come back as one *Error each, joined
// (errors.Is works on the result); a failed batch request stops early.
func (c *Client) DeleteObjects(ctx context.Context, bucket string, keys []string) error {
	var failed []error
	for start := 0; start < len(keys); start += deleteBatch {
		batch := keys[start:min(start+deleteBatch, len(keys))]
		ids := make([]types.ObjectIdentifier, len(batch))
		for i := range batch {
			ids[i] = types.ObjectIdentifier{Key: aws.String(batch[i])}
		}
		in := &s3.DeleteObjectsInput{Bucket: &bucket, Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)}}
		var out *s3.DeleteObjectsOutput
		err := c.call(ctx, "DeleteObjects", bucket, "", nil, 0, func(ctx context.Context) error {
			var err error
			out, err = c.s3.DeleteObjects(ctx, in, withContentMD5)
			return err
		})
		if err != nil {
			if len(failed) == 0 {
				return err
			}
			return errors.Join(append(failed, err)...)
		}
		for _, e := range out.Errors {
			code := aws.ToString(e.Code)
			if code == "NoSuchKey" {
				continue
			}
			failed = append(failed, &Error{
				Op: "DeleteObjects", Bucket: bucket, Key: aws.ToString(e.Key),
				Code: code, Message: aws.ToString(e.Message), Kind: kindFor(code, 0),
			})
		}
	}
	return errors.Join(failed...)
}

// withContentMD5 makes a multi-object delete carry Content-MD5, which every
// COS and S3-compatible server accepts, instead of the SDK's newer default
// CRC32 checksum header, which older servers reject.
func withContentMD5(o *s3.Options) {
	o.APIOptions = append(o.APIOptions, func(stack *middleware.Stack) error {
		if _, ok := stack.Finalize.Get("AWSChecksum:ComputeInputPayloadChecksum"); ok {
			if _, err := stack.Finalize.Remove("AWSChecksum:ComputeInputPayloadChecksum"); err != nil {
				return err
			}
		}
		return stack.Build.Add(middleware.BuildMiddlewareFunc("CosmountContentMD5",
			func(ctx context.Context, in middleware.BuildInput, next middleware.BuildHandler) (middleware.BuildOutput, middleware.Metadata, error) {
				req, ok := in.Request.(*smithyhttp.Request)
				if !ok {
					return middleware.BuildOutput{}, middleware.Metadata{}, fmt.Errorf("content md5: unexpected request type %T", in.Request)
				}
				h := md5.New()
				if stream := req.GetStream(); stream != nil {
					if _, err := io.Copy(h, stream); err != nil {
						return middleware.BuildOutput{}, middleware.Metadata{}, fmt.Errorf("content md5: %w", err)
					}
					if err := req.RewindStream(); err != nil {
						return middleware.BuildOutput{}, middleware.Metadata{}, fmt.Errorf("content md5: %w", err)
					}
				}
				req.Header.Set("Content-MD5", base64.StdEncoding.EncodeToString(h.Sum(nil)))
				return next.HandleBuild(ctx, in)
			}), middleware.After)
	})
}

func unquote(etag string) string { return strings.Trim(etag, `"`) }

// quote makes an ETag an HTTP entity tag; "*" stays as it is.
func quote(etag string) string {
	if etag == "*" || strings.HasPrefix(etag, `"`) {
		return etag
	}
	return `"` + etag + `"`
}

func lowerKeys(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[strings.ToLower(k)] = v
	}
	return out
}
