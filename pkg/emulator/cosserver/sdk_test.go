package cosserver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

func sdkClient(url, keyID, secret string, checksums aws.RequestChecksumCalculation) *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint:               aws.String(url),
		UsePathStyle:               true,
		Region:                     "us-south",
		Credentials:                credentials.NewStaticCredentialsProvider(keyID, secret, ""),
		RequestChecksumCalculation: checksums,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		RetryMaxAttempts:           1,
	})
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// sdkRoundTrip drives a server at url with the real aws-sdk-go-v2 client.
func sdkRoundTrip(t *testing.T, url string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, mode := range []aws.RequestChecksumCalculation{aws.RequestChecksumCalculationWhenRequired, aws.RequestChecksumCalculationWhenSupported} {
		c := sdkClient(url, testKeyID, testSecret, mode)
		bucket := "sdk-bucket"
		if mode == aws.RequestChecksumCalculationWhenSupported {
			bucket = "sdk-bucket-crc"
		}
		if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket),
			CreateBucketConfiguration: &types.CreateBucketConfiguration{LocationConstraint: "us-south-smart"}}); err != nil {
			t.Fatalf("CreateBucket: %v", err)
		}
		lb, err := c.ListBuckets(ctx, &s3.ListBucketsInput{})
		if err != nil || !hasBucket(lb.Buckets, bucket) {
			t.Fatalf("ListBuckets: %v %+v", err, lb)
		}
		loc, err := c.GetBucketLocation(ctx, &s3.GetBucketLocationInput{Bucket: aws.String(bucket)})
		if err != nil || loc.LocationConstraint != "us-south-smart" {
			t.Fatalf("GetBucketLocation: %v %+v", err, loc)
		}
		body := []byte("hello from the sdk")
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("dir/a file.txt"),
			Body: bytes.NewReader(body), ContentType: aws.String("text/plain"), Metadata: map[string]string{"mode": "33188"}}); err != nil {
			t.Fatalf("PutObject: %v", err)
		}
		g, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("dir/a file.txt"), Range: aws.String("bytes=6-9")})
		if err != nil {
			t.Fatalf("GetObject: %v", err)
		}
		got, _ := io.ReadAll(g.Body)
		g.Body.Close()
		if string(got) != "from" || aws.ToString(g.ContentRange) != "bytes 6-9/18" {
			t.Errorf("ranged get: %q %q", got, aws.ToString(g.ContentRange))
		}
		h, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("dir/a file.txt")})
		if err != nil || aws.ToInt64(h.ContentLength) != int64(len(body)) || h.Metadata["mode"] != "33188" || aws.ToString(h.ContentType) != "text/plain" {
			t.Errorf("HeadObject: %v %+v", err, h)
		}
		if _, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("missing")}); err == nil {
			t.Error("HeadObject of a missing key succeeded")
		}
		_, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("missing")})
		var nsk *types.NoSuchKey
		if !errors.As(err, &nsk) {
			t.Errorf("GetObject missing: %v", err)
		}
		if _, err := c.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String(bucket), Key: aws.String("copy"),
			CopySource: aws.String(bucket + "/dir/a%20file.txt")}); err != nil {
			t.Errorf("CopyObject: %v", err)
		}
		// Multipart with two parts (the test store's minimum part size is small).
		mp, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String("multi")})
		if err != nil {
			t.Fatalf("CreateMultipartUpload: %v", err)
		}
		var parts []types.CompletedPart
		for i, p := range [][]byte{bytes.Repeat([]byte("p"), testPartSize), []byte("last")} {
			up, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(bucket), Key: aws.String("multi"), UploadId: mp.UploadId,
				PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(p)})
			if err != nil {
				t.Fatalf("UploadPart: %v", err)
			}
			parts = append(parts, types.CompletedPart{ETag: up.ETag, PartNumber: aws.Int32(int32(i + 1))})
		}
		if _, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String("multi"),
			UploadId: mp.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}}); err != nil {
			t.Fatalf("CompleteMultipartUpload: %v", err)
		}
		var keys []string
		pager := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), MaxKeys: aws.Int32(1)})
		for pager.HasMorePages() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				t.Fatalf("ListObjectsV2: %v", err)
			}
			for _, o := range page.Contents {
				keys = append(keys, aws.ToString(o.Key))
			}
		}
		if strings.Join(keys, ",") != "copy,dir/a file.txt,multi" {
			t.Errorf("listed %v", keys)
		}
		v1, err := c.ListObjects(ctx, &s3.ListObjectsInput{Bucket: aws.String(bucket), Delimiter: aws.String("/")})
		if err != nil || len(v1.CommonPrefixes) != 1 || aws.ToString(v1.CommonPrefixes[0].Prefix) != "dir/" || len(v1.Contents) != 2 {
			t.Errorf("ListObjects v1: %v %+v", err, v1)
		}
		del, err := c.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: aws.String(bucket), Delete: &types.Delete{
			Objects: []types.ObjectIdentifier{{Key: aws.String("copy")}, {Key: aws.String("multi")}, {Key: aws.String("dir/a file.txt")}}}})
		if err != nil || len(del.Deleted) != 3 {
			t.Fatalf("DeleteObjects: %v %+v", err, del)
		}
		if _, err := c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(bucket)}); err != nil {
			t.Errorf("DeleteBucket: %v", err)
		}
	}
	bad := sdkClient(url, testKeyID, "wrong-secret", aws.RequestChecksumCalculationWhenRequired)
	_, err := bad.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("bkt")})
	if apiCode(err) != "SignatureDoesNotMatch" {
		t.Errorf("wrong secret: %v", err)
	}
	reader := sdkClient(url, readerKeyID, readerSecret, aws.RequestChecksumCalculationWhenRequired)
	_, err = reader.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String("x"), Body: strings.NewReader("x")})
	if apiCode(err) != "AccessDenied" {
		t.Errorf("reader put: %v", err)
	}
}

func hasBucket(bs []types.Bucket, name string) bool {
	for _, b := range bs {
		if aws.ToString(b.Name) == name {
			return true
		}
	}
	return false
}

func TestAWSSDKRoundTrip(t *testing.T) {
	e := newEnv(t)
	sdkRoundTrip(t, e.url)
}
