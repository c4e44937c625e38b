package cos

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

const (
	// maxSingleCopy is the largest object one CopyObject can copy.
	maxSingleCopy = MaxPartSize
	// copyPartSize is the UploadPartCopy range size for bigger objects
	// (grown if needed to stay within MaxParts).
	copyPartSize = 512 << 20
	// copyConcurrency is how many UploadPartCopy requests run at once; they
	// move no data through this process, so this only bounds server load.
	copyConcurrency = 4
)

// CopyObject copies srcKey to dstKey inside bucket, server-side. Objects
// over 5 GiB are copied as a multipart upload of UploadPartCopy ranges. The
// source is read with HEAD first, which gives the result its size and, when
// metadata is kept, its metadata and content type.
func (c *Client) CopyObject(ctx context.Context, bucket, srcKey, dstKey string, o CopyOptions) (ObjectInfo, error) {
	src, err := c.HeadObject(ctx, bucket, srcKey)
	if err != nil {
		return ObjectInfo{}, err
	}
	if o.IfMatch != "" && unquote(o.IfMatch) != src.ETag {
		err := &Error{Op: "CopyObject", Bucket: bucket, Key: srcKey, StatusCode: 412, Code: "PreconditionFailed",
			Message: "source ETag does not match", Kind: ErrPreconditionFailed}
		c.observe("CopyObject", 0, err)
		return ObjectInfo{}, err
	}
	info := ObjectInfo{Key: dstKey, Size: src.Size, ContentType: src.ContentType, Metadata: src.Metadata}
	if o.ReplaceMetadata {
		info.ContentType = o.ContentType
		info.Metadata = lowerKeys(o.Metadata)
	}
	// Pin the copy to the version just inspected, so a concurrent overwrite
	// of the source cannot produce a mixed object.
	ifMatch := src.ETag
	if src.Size > maxSingleCopy {
		return c.multipartCopy(ctx, bucket, srcKey, dstKey, ifMatch, info)
	}

	in := &s3.CopyObjectInput{
		Bucket:            &bucket,
		Key:               &dstKey,
		CopySource:        aws.String(copySource(bucket, srcKey)),
		CopySourceIfMatch: aws.String(quote(ifMatch)),
	}
	if o.ReplaceMetadata {
		in.MetadataDirective = types.MetadataDirectiveReplace
		in.Metadata = o.Metadata
		if o.ContentType != "" {
			in.ContentType = aws.String(o.ContentType)
		}
	}
	err = c.call(ctx, "CopyObject", bucket, dstKey, nil, 0, func(ctx context.Context) error {
		out, err := c.s3.CopyObject(ctx, in)
		if err != nil {
			return err
		}
		if r := out.CopyObjectResult; r != nil {
			info.ETag = unquote(aws.ToString(r.ETag))
			info.LastModified = aws.ToTime(r.LastModified)
		}
		return nil
	})
	return info, err
}

// multipartCopy copies an object too large for CopyObject. info already
// holds the destination's size, content type and metadata.
func (c *Client) multipartCopy(ctx context.Context, bucket, srcKey, dstKey, ifMatch string, info ObjectInfo) (ObjectInfo, error) {
	uploadID, err := c.CreateMultipartUpload(ctx, bucket, dstKey, PutOptions{ContentType: info.ContentType, Metadata: info.Metadata})
	if err != nil {
		return ObjectInfo{}, err
	}
	partSize := max(int64(copyPartSize), (info.Size+MaxParts-1)/MaxParts)
	nparts := int((info.Size + partSize - 1) / partSize)
	parts := make([]CompletedPart, nparts)

	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	sem := make(chan struct{}, copyConcurrency)
	for i := 0; i < nparts; i++ {
		select {
		case sem <- struct{}{}:
		case <-cctx.Done():
		}
		if cctx.Err() != nil {
			break
		}
		first := int64(i) * partSize
		last := min(first+partSize, info.Size) - 1
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			p, err := c.uploadPartCopy(cctx, bucket, srcKey, dstKey, uploadID, int32(i+1), first, last, ifMatch)
			if err != nil {
				cancel(err)
				return
			}
			parts[i] = p
		}()
	}
	wg.Wait()
	if err := context.Cause(cctx); err != nil {
		c.abortQuietly(ctx, bucket, dstKey, uploadID)
		return ObjectInfo{}, mapError("CopyObject", bucket, dstKey, err)
	}
	done, err := c.CompleteMultipartUpload(ctx, bucket, dstKey, uploadID, parts)
	if err != nil {
		c.abortQuietly(ctx, bucket, dstKey, uploadID)
		return ObjectInfo{}, err
	}
	info.ETag, info.LastModified = done.ETag, done.LastModified
	return info, nil
}

// UploadPartCopy makes part number of a multipart upload of dstKey from
// bytes first..last (inclusive) of srcKey in the same bucket, server-side:
// no data crosses the network. ifMatch, when set, is the source's required
// ETag (ErrPreconditionFailed otherwise). Every part but the last must be
// at least 5 MiB, copied or not.
func (c *Client) UploadPartCopy(ctx context.Context, bucket, srcKey, dstKey, uploadID string, number int32, first, last int64, ifMatch string) (CompletedPart, error) {
	return c.uploadPartCopy(ctx, bucket, srcKey, dstKey, uploadID, number, first, last, ifMatch)
}

func (c *Client) uploadPartCopy(ctx context.Context, bucket, srcKey, dstKey, uploadID string, number int32, first, last int64, ifMatch string) (CompletedPart, error) {
	in := &s3.UploadPartCopyInput{
		Bucket:          &bucket,
		Key:             &dstKey,
		UploadId:        &uploadID,
		PartNumber:      aws.Int32(number),
		CopySource:      aws.String(copySource(bucket, srcKey)),
		CopySourceRange: aws.String(fmt.Sprintf("bytes=%d-%d", first, last)),
	}
	if ifMatch != "" {
		in.CopySourceIfMatch = aws.String(quote(ifMatch))
	}
	part := CompletedPart{PartNumber: number}
	err := c.call(ctx, "UploadPartCopy", bucket, dstKey, nil, 0, func(ctx context.Context) error {
		out, err := c.s3.UploadPartCopy(ctx, in)
		if err != nil {
			return err
		}
		if r := out.CopyPartResult; r != nil {
			part.ETag = unquote(aws.ToString(r.ETag))
		}
		return nil
	})
	return part, err
}

// copySource builds x-amz-copy-source: "bucket/key" with every byte outside
// the unreserved set percent-encoded except "/", the way S3 signs URIs, so
// keys with "+", "%", spaces or non-ASCII survive the server's decoding.
func copySource(bucket, key string) string {
	const hex = "0123456789ABCDEF"
	s := bucket + "/" + key
	var b strings.Builder
	b.Grow(len(s) * 3)
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch >= 'A' && ch <= 'Z' || ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' ||
			ch == '-' || ch == '_' || ch == '.' || ch == '~' || ch == '/' {
			b.WriteByte(ch)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[ch>>4])
		b.WriteByte(hex[ch&15])
	}
	return b.String()
}
