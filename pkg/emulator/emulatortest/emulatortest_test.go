package emulatortest_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/cosmount/cosmount/pkg/emulator/config"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

func hmacClient(env *emulatortest.Env) *s3.Client {
	id, secret := env.HMAC()
	return s3.New(s3.Options{
		BaseEndpoint:               aws.String(env.COSURL),
		Region:                     "us-south",
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(id, secret, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// The options reach the emulator: extra buckets, a lowered multipart part
// minimum and a configuration change, exercised with the AWS SDK over HMAC.
func TestOptions(t *testing.T) {
	env := emulatortest.Start(t,
		emulatortest.WithBuckets("second-bucket"),
		emulatortest.WithMinPartSize(1024),
		emulatortest.WithConfig(func(c *config.Config) {
			c.HMACKeys = append(c.HMACKeys, config.HMACKey{AccessKeyID: "reader-key", SecretAccessKey: "reader-secret",
				Policies: []config.Policy{{Role: config.RoleReader}}})
		}),
	)
	ctx := context.Background()
	c := hmacClient(env)
	if _, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("second-bucket")}); err != nil {
		t.Errorf("WithBuckets: %v", err)
	}

	key := aws.String("multi")
	up, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(env.Bucket), Key: key})
	if err != nil {
		t.Fatal(err)
	}
	var parts []types.CompletedPart
	var want []byte
	for i, size := range []int{2048, 2048, 10} {
		body := bytes.Repeat([]byte{byte('a' + i)}, size)
		want = append(want, body...)
		p, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(env.Bucket), Key: key, UploadId: up.UploadId,
			PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(body)})
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, types.CompletedPart{ETag: p.ETag, PartNumber: aws.Int32(int32(i + 1))})
	}
	if _, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(env.Bucket), Key: key,
		UploadId: up.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}}); err != nil {
		t.Fatalf("complete with 2 KiB parts under WithMinPartSize(1024): %v", err)
	}
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(env.Bucket), Key: key})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if !bytes.Equal(got, want) {
		t.Errorf("multipart object: %d bytes, want %d", len(got), len(want))
	}

	reader := s3.New(s3.Options{BaseEndpoint: aws.String(env.COSURL), Region: "us-south", UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("reader-key", "reader-secret", "")})
	if _, err := reader.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(env.Bucket), Key: key}); err != nil {
		t.Errorf("WithConfig reader key cannot read: %v", err)
	}
	_, err = reader.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(env.Bucket), Key: aws.String("no"), Body: strings.NewReader("x")})
	if err == nil || !strings.Contains(err.Error(), "AccessDenied") {
		t.Errorf("WithConfig reader key PUT: %v, want AccessDenied", err)
	}
}

func TestPodTokenAndRestart(t *testing.T) {
	env := emulatortest.Start(t)
	dir := t.TempDir()
	path := env.WritePodToken(t, dir, "default", "default", "pod-a", 10*time.Minute)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || filepath.Dir(path) != dir {
		t.Fatalf("token file %s: %v %v", path, fi, err)
	}
	if _, err := hmacClient(env).PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(env.Bucket),
		Key: aws.String("k"), Body: strings.NewReader("v")}); err != nil {
		t.Fatal(err)
	}
	url := env.COSURL
	env.Restart(t)
	if env.COSURL != url {
		t.Errorf("COS URL changed across Restart: %s -> %s", url, env.COSURL)
	}
	out, err := hmacClient(env).GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(env.Bucket), Key: aws.String("k")})
	if err != nil {
		t.Fatalf("object after restart: %v", err)
	}
	out.Body.Close()
	if len(env.Audit()) == 0 {
		t.Error("no audit entries after a request")
	}
}
