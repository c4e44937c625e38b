package cos

import (
	"context"
	"errors"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// HeadBucket checks that the bucket exists and the caller may use it.
func (c *Client) HeadBucket(ctx context.Context, bucket string) error {
	return c.call(ctx, "HeadBucket", bucket, "", nil, 0, func(ctx context.Context) error {
		_, err := c.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &bucket})
		return err
	})
}

// CreateBucket creates a bucket in the client's service instance. The
// LocationConstraint ("us-south-smart", "eu-de-cold", ...) picks the storage
// class; empty leaves the choice to COS (standard class of the endpoint's
// location).
func (c *Client) CreateBucket(ctx context.Context, bucket, locationConstraint string) error {
	in := &s3.CreateBucketInput{Bucket: &bucket}
	if locationConstraint != "" {
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{
			LocationConstraint: types.BucketLocationConstraint(locationConstraint),
		}
	}
	return c.call(ctx, "CreateBucket", bucket, "", nil, 0, func(ctx context.Context) error {
		_, err := c.s3.CreateBucket(ctx, in, c.withInstanceHeader)
		return err
	})
}

// DeleteBucket deletes an empty bucket (ErrBucketNotEmpty otherwise).
func (c *Client) DeleteBucket(ctx context.Context, bucket string) error {
	return c.call(ctx, "DeleteBucket", bucket, "", nil, 0, func(ctx context.Context) error {
		_, err := c.s3.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: &bucket})
		return err
	})
}

// EmptyAndDeleteBucket deletes every object, aborts every multipart upload
// and then deletes the bucket. Each round lists from the start rather than
// following a continuation token, because the keys of earlier pages are gone.
func (c *Client) EmptyAndDeleteBucket(ctx context.Context, bucket string) error {
	for {
		page, err := c.ListObjects(ctx, bucket, ListOptions{MaxKeys: deleteBatch})
		if err != nil {
			return err
		}
		if len(page.Objects) == 0 {
			break
		}
		keys := make([]string, len(page.Objects))
		for i, o := range page.Objects {
			keys[i] = o.Key
		}
		if err := c.DeleteObjects(ctx, bucket, keys); err != nil {
			return err
		}
	}
	if err := c.abortAllUploads(ctx, bucket); err != nil {
		return err
	}
	return c.DeleteBucket(ctx, bucket)
}

func (c *Client) abortAllUploads(ctx context.Context, bucket string) error {
	var keyMarker, idMarker *string
	for {
		in := &s3.ListMultipartUploadsInput{Bucket: &bucket, KeyMarker: keyMarker, UploadIdMarker: idMarker}
		var out *s3.ListMultipartUploadsOutput
		err := c.call(ctx, "ListMultipartUploads", bucket, "", nil, 0, func(ctx context.Context) error {
			var err error
			out, err = c.s3.ListMultipartUploads(ctx, in)
			return err
		})
		if err != nil {
			return err
		}
		for _, u := range out.Uploads {
			if err := c.AbortMultipartUpload(ctx, bucket, aws.ToString(u.Key), aws.ToString(u.UploadId)); err != nil {
				return err
			}
		}
		if !aws.ToBool(out.IsTruncated) {
			return nil
		}
		if aws.ToString(out.NextKeyMarker) == "" && aws.ToString(out.NextUploadIdMarker) == "" {
			return errors.New("cos: ListMultipartUploads is truncated but gives no next marker")
		}
		keyMarker, idMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

// BucketLocation returns the bucket's LocationConstraint.
func (c *Client) BucketLocation(ctx context.Context, bucket string) (string, error) {
	var loc string
	err := c.call(ctx, "GetBucketLocation", bucket, "", nil, 0, func(ctx context.Context) error {
		out, err := c.s3.GetBucketLocation(ctx, &s3.GetBucketLocationInput{Bucket: &bucket})
		if err != nil {
			return err
		}
		loc = string(out.LocationConstraint)
		return nil
	})
	return loc, err
}

// ListBuckets lists the buckets of the client's service instance.
func (c *Client) ListBuckets(ctx context.Context) ([]BucketInfo, error) {
	var buckets []BucketInfo
	var token *string
	for {
		in := &s3.ListBucketsInput{ContinuationToken: token}
		var out *s3.ListBucketsOutput
		err := c.call(ctx, "ListBuckets", "", "", nil, 0, func(ctx context.Context) error {
			var err error
			out, err = c.s3.ListBuckets(ctx, in, c.withInstanceHeader)
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, b := range out.Buckets {
			buckets = append(buckets, BucketInfo{Name: aws.ToString(b.Name), CreationDate: aws.ToTime(b.CreationDate)})
		}
		if aws.ToString(out.ContinuationToken) == "" {
			return buckets, nil
		}
		token = out.ContinuationToken
	}
}

// Bucket is a view of one bucket with the object operations of Client.
// pkg/fs declares its object-store interface with exactly these methods.
type Bucket struct {
	c    *Client
	name string
}

// Bucket returns the view of bucket name. It does no I/O.
func (c *Client) Bucket(name string) *Bucket { return &Bucket{c: c, name: name} }

// Name is the bucket's name.
func (b *Bucket) Name() string { return b.name }

// Client is the client the view uses.
func (b *Bucket) Client() *Client { return b.c }

func (b *Bucket) Head(ctx context.Context, key string) (ObjectInfo, error) {
	return b.c.HeadObject(ctx, b.name, key)
}

func (b *Bucket) Get(ctx context.Context, key string, o GetOptions) (io.ReadCloser, ObjectInfo, error) {
	return b.c.GetObject(ctx, b.name, key, o)
}

func (b *Bucket) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, o PutOptions) (ObjectInfo, error) {
	return b.c.PutObject(ctx, b.name, key, body, size, o)
}

func (b *Bucket) CreateMultipart(ctx context.Context, key string, o PutOptions) (string, error) {
	return b.c.CreateMultipartUpload(ctx, b.name, key, o)
}

func (b *Bucket) UploadPart(ctx context.Context, key, uploadID string, part int32, body io.ReadSeeker, size int64) (CompletedPart, error) {
	return b.c.UploadPart(ctx, b.name, key, uploadID, part, body, size)
}

func (b *Bucket) UploadPartCopy(ctx context.Context, key, uploadID string, part int32, srcKey string, first, last int64, ifMatch string) (CompletedPart, error) {
	return b.c.UploadPartCopy(ctx, b.name, srcKey, key, uploadID, part, first, last, ifMatch)
}

func (b *Bucket) CompleteMultipart(ctx context.Context, key, uploadID string, parts []CompletedPart) (ObjectInfo, error) {
	return b.c.CompleteMultipartUpload(ctx, b.name, key, uploadID, parts)
}

func (b *Bucket) AbortMultipart(ctx context.Context, key, uploadID string) error {
	return b.c.AbortMultipartUpload(ctx, b.name, key, uploadID)
}

func (b *Bucket) List(ctx context.Context, o ListOptions) (ListPage, error) {
	return b.c.ListObjects(ctx, b.name, o)
}

func (b *Bucket) Copy(ctx context.Context, srcKey, dstKey string, o CopyOptions) (ObjectInfo, error) {
	return b.c.CopyObject(ctx, b.name, srcKey, dstKey, o)
}

func (b *Bucket) Delete(ctx context.Context, key string) error {
	return b.c.DeleteObject(ctx, b.name, key)
}

func (b *Bucket) DeleteMany(ctx context.Context, keys []string) error {
	return b.c.DeleteObjects(ctx, b.name, keys)
}

// UploadStream is Client.UploadStream on this bucket.
func (b *Bucket) UploadStream(ctx context.Context, key string, r io.Reader, o PutOptions, partSize int64, concurrency int) (ObjectInfo, error) {
	return b.c.UploadStream(ctx, b.name, key, r, o, partSize, concurrency)
}
