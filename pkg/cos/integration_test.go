package cos_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
	"github.com/cosmount/cosmount/pkg/emulator/faults"
	"github.com/cosmount/cosmount/pkg/iam"
)

// Integration tests against the in-process emulator (IBM IAM + COS on
// 127.0.0.1), with real trusted-profile token exchange through pkg/iam.

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// podTokens returns a caching trusted-profile source for a pod of namespace
// ns using profileID, as the mount process builds it.
func podTokens(t *testing.T, env *emulatortest.Env, ns, profileID string) *iam.CachingSource {
	t.Helper()
	return podTokensWith(t, env, ns, profileID, iam.CachingOptions{})
}

func podTokensWith(t *testing.T, env *emulatortest.Env, ns, profileID string, copts iam.CachingOptions) *iam.CachingSource {
	t.Helper()
	exch, err := iam.NewClient(iam.ClientOptions{BaseURL: env.IAMURL, Version: "test"})
	if err != nil {
		t.Fatalf("iam.NewClient: %v", err)
	}
	path := env.WritePodToken(t, t.TempDir(), ns, "default", "pod-1", time.Hour)
	raw, err := iam.NewTrustedProfileSource(iam.TrustedProfileOptions{Exchanger: exch, TokenFile: path, Profile: iam.Profile{ID: profileID}})
	if err != nil {
		t.Fatalf("iam.NewTrustedProfileSource: %v", err)
	}
	src := iam.NewCachingSource(raw, copts)
	t.Cleanup(func() { src.Close() })
	return src
}

func newClient(t *testing.T, env *emulatortest.Env, mod func(*cos.Options)) *cos.Client {
	t.Helper()
	opts := cos.Options{
		Endpoint:          env.COSURL,
		UsePathStyle:      true,
		ServiceInstanceID: env.ServiceInstanceID,
		Version:           "test",
		MaxBackoff:        50 * time.Millisecond,
	}
	mod(&opts)
	c, err := cos.New(opts)
	if err != nil {
		t.Fatalf("cos.New: %v", err)
	}
	return c
}

func bearerClient(t *testing.T, env *emulatortest.Env) *cos.Client {
	src := podTokens(t, env, "default", emulatortest.WriterProfileID)
	return newClient(t, env, func(o *cos.Options) { o.Tokens = src })
}

func hmacClient(t *testing.T, env *emulatortest.Env) *cos.Client {
	id, secret := env.HMAC()
	return newClient(t, env, func(o *cos.Options) { o.HMAC = &cos.HMAC{AccessKeyID: id, SecretAccessKey: secret} })
}

func wantKind(t *testing.T, what string, err, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("%s: error %v, want %v", what, err, kind)
	}
}

func readAll(t *testing.T, c *cos.Client, bucket, key string, o cos.GetOptions) ([]byte, cos.ObjectInfo) {
	t.Helper()
	rc, info, err := c.GetObject(ctxFor(t), bucket, key, o)
	if err != nil {
		t.Fatalf("GetObject %s %+v: %v", key, o, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return data, info
}

func TestIntegrationEveryOperation(t *testing.T) {
	env := emulatortest.Start(t)
	tests := []struct {
		name       string
		client     func(*testing.T, *emulatortest.Env) *cos.Client
		scheme     string
		principal  string
		bucketName string
	}{
		{"bearer trusted profile", bearerClient, "bearer", emulatortest.WriterProfileID, "it-bearer"},
		{"hmac", hmacClient, "sigv4", "test-access-key", "it-hmac"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.client(t, env)
			mark := env.AuditLen()
			exerciseEveryOperation(t, c, tt.bucketName)
			cosEntries := 0
			for _, e := range env.AuditSince(mark) {
				if e.Service != "cos" {
					continue
				}
				cosEntries++
				if e.AuthScheme != tt.scheme || e.PrincipalID != tt.principal {
					t.Errorf("audit %s %s: scheme %q principal %q, want %q %q", e.Operation, e.Path, e.AuthScheme, e.PrincipalID, tt.scheme, tt.principal)
				}
			}
			if cosEntries < 30 {
				t.Errorf("audit shows %d COS requests; the operations were not all recorded", cosEntries)
			}
		})
	}
}

func exerciseEveryOperation(t *testing.T, c *cos.Client, newBucket string) {
	ctx := ctxFor(t)
	const bucket = emulatortest.Bucket

	buckets, err := c.ListBuckets(ctx)
	if err != nil {
		t.Fatalf("ListBuckets: %v", err)
	}
	if !slices.ContainsFunc(buckets, func(b cos.BucketInfo) bool { return b.Name == bucket && !b.CreationDate.IsZero() }) {
		t.Fatalf("ListBuckets = %+v, want %s", buckets, bucket)
	}
	if err := c.HeadBucket(ctx, bucket); err != nil {
		t.Fatalf("HeadBucket: %v", err)
	}
	if loc, err := c.BucketLocation(ctx, bucket); err != nil || loc != "us-south-standard" {
		t.Fatalf("BucketLocation = %q, %v", loc, err)
	}
	if err := c.CreateBucket(ctx, newBucket, "us-south-smart"); err != nil {
		t.Fatalf("CreateBucket: %v", err)
	}
	if loc, err := c.BucketLocation(ctx, newBucket); err != nil || loc != "us-south-smart" {
		t.Fatalf("BucketLocation of the new bucket = %q, %v", loc, err)
	}
	wantKind(t, "HeadBucket of a missing bucket", c.HeadBucket(ctx, "no-such-bucket-here"), cos.ErrNotFound)

	// Objects, with keys that need escaping in paths, copy sources and listings.
	b := c.Bucket(newBucket)
	key := "dir a/x+y=1%&.txt"
	meta := map[string]string{"mode": "33188", "uid": "1000", "mtime": "1700000000"}
	put, err := b.Put(ctx, key, bytes.NewReader([]byte("hello world")), 11, cos.PutOptions{ContentType: "text/plain", Metadata: meta, IfNoneMatch: "*"})
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if put.ETag == "" || strings.Contains(put.ETag, `"`) {
		t.Errorf("Put ETag %q", put.ETag)
	}
	_, err = b.Put(ctx, key, bytes.NewReader([]byte("again")), 5, cos.PutOptions{IfNoneMatch: "*"})
	wantKind(t, "Put with If-None-Match over an existing key", err, cos.ErrPreconditionFailed)
	_, err = b.Put(ctx, key, bytes.NewReader([]byte("again")), 5, cos.PutOptions{IfMatch: "0123"})
	wantKind(t, "Put with a stale If-Match", err, cos.ErrPreconditionFailed)

	head, err := b.Head(ctx, key)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	if head.Size != 11 || head.ETag != put.ETag || head.ContentType != "text/plain" || head.Metadata["mtime"] != "1700000000" || head.LastModified.IsZero() {
		t.Errorf("Head = %+v", head)
	}
	_, err = b.Head(ctx, "missing")
	wantKind(t, "Head of a missing key", err, cos.ErrNotFound)

	if data, info := readAll(t, c, newBucket, key, cos.GetOptions{}); string(data) != "hello world" || info.Metadata["uid"] != "1000" {
		t.Errorf("Get = %q %+v", data, info)
	}
	if data, info := readAll(t, c, newBucket, key, cos.GetOptions{Offset: 6, Length: 3, IfMatch: put.ETag}); string(data) != "wor" || info.Size != 11 {
		t.Errorf("ranged Get = %q size %d", data, info.Size)
	}
	if data, _ := readAll(t, c, newBucket, key, cos.GetOptions{Offset: 6}); string(data) != "world" {
		t.Errorf("Get from offset = %q", data)
	}
	_, _, err = b.Get(ctx, key, cos.GetOptions{Offset: 100, Length: 1})
	wantKind(t, "Get past the end", err, cos.ErrInvalidRange)
	_, _, err = b.Get(ctx, key, cos.GetOptions{IfMatch: "0123"})
	wantKind(t, "Get with a stale If-Match", err, cos.ErrPreconditionFailed)
	_, _, err = b.Get(ctx, "missing", cos.GetOptions{})
	wantKind(t, "Get of a missing key", err, cos.ErrNotFound)

	// Copies: keep metadata, replace metadata.
	cp, err := b.Copy(ctx, key, "dir a/copy", cos.CopyOptions{IfMatch: put.ETag})
	if err != nil {
		t.Fatalf("Copy: %v", err)
	}
	if h, err := b.Head(ctx, "dir a/copy"); err != nil || h.Metadata["mode"] != "33188" || h.Size != 11 || cp.ETag != h.ETag {
		t.Errorf("copied object %+v (copy said %+v), %v", h, cp, err)
	}
	if _, err := b.Copy(ctx, key, "dir a/renamed", cos.CopyOptions{ReplaceMetadata: true, Metadata: map[string]string{"mode": "33261"}, ContentType: "application/x-sh"}); err != nil {
		t.Fatalf("Copy with REPLACE: %v", err)
	}
	if h, err := b.Head(ctx, "dir a/renamed"); err != nil || h.Metadata["mode"] != "33261" || h.ContentType != "application/x-sh" || h.Metadata["uid"] != "" {
		t.Errorf("copy with replaced metadata %+v, %v", h, err)
	}
	_, err = b.Copy(ctx, key, "dir a/never", cos.CopyOptions{IfMatch: "0123"})
	wantKind(t, "Copy with a stale If-Match", err, cos.ErrPreconditionFailed)

	// Listing with a delimiter and pagination.
	if _, err := b.Put(ctx, "top.txt", bytes.NewReader(nil), 0, cos.PutOptions{}); err != nil {
		t.Fatalf("Put top.txt: %v", err)
	}
	page, err := b.List(ctx, cos.ListOptions{Delimiter: "/"})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(page.Objects) != 1 || page.Objects[0].Key != "top.txt" || fmt.Sprint(page.CommonPrefixes) != "[dir a/]" {
		t.Errorf("List with delimiter = %+v", page)
	}
	var keys []string
	opts := cos.ListOptions{Prefix: "dir a/", MaxKeys: 1}
	for {
		page, err := b.List(ctx, opts)
		if err != nil {
			t.Fatalf("List page: %v", err)
		}
		for _, o := range page.Objects {
			keys = append(keys, o.Key)
		}
		if page.NextContinuationToken == "" {
			break
		}
		opts.ContinuationToken = page.NextContinuationToken
	}
	if want := []string{"dir a/copy", "dir a/renamed", key}; !slices.Equal(keys, want) {
		t.Errorf("paginated keys %q, want %q", keys, want)
	}

	// Multipart by hand: parts out of order, then one that is too small.
	id, err := b.CreateMultipart(ctx, "mp", cos.PutOptions{ContentType: "application/octet-stream", Metadata: map[string]string{"gid": "5"}})
	if err != nil {
		t.Fatalf("CreateMultipart: %v", err)
	}
	p1data := bytes.Repeat([]byte("a"), cos.MinPartSize)
	p2, err := b.UploadPart(ctx, "mp", id, 2, bytes.NewReader([]byte("tail")), 4)
	if err != nil {
		t.Fatalf("UploadPart 2: %v", err)
	}
	p1, err := b.UploadPart(ctx, "mp", id, 1, bytes.NewReader(p1data), int64(len(p1data)))
	if err != nil {
		t.Fatalf("UploadPart 1: %v", err)
	}
	if _, err := b.CompleteMultipart(ctx, "mp", id, []cos.CompletedPart{p2, p1}); err != nil {
		t.Fatalf("CompleteMultipart: %v", err)
	}
	if h, err := b.Head(ctx, "mp"); err != nil || h.Size != int64(cos.MinPartSize+4) || h.Metadata["gid"] != "5" {
		t.Errorf("multipart object %+v, %v", h, err)
	}
	id, err = b.CreateMultipart(ctx, "small", cos.PutOptions{})
	if err != nil {
		t.Fatalf("CreateMultipart: %v", err)
	}
	s1, err1 := b.UploadPart(ctx, "small", id, 1, bytes.NewReader([]byte("tiny")), 4)
	s2, err2 := b.UploadPart(ctx, "small", id, 2, bytes.NewReader([]byte("tail")), 4)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("UploadPart: %v", err)
	}
	_, err = b.CompleteMultipart(ctx, "small", id, []cos.CompletedPart{s1, s2})
	wantKind(t, "Complete with a part under 5 MiB", err, cos.ErrEntityTooSmall)
	if err := b.AbortMultipart(ctx, "small", id); err != nil {
		t.Fatalf("AbortMultipart: %v", err)
	}
	_, err = b.UploadPart(ctx, "small", id, 3, bytes.NewReader([]byte("late")), 4)
	wantKind(t, "UploadPart after abort", err, cos.ErrNotFound)

	// Streaming upload over several parts.
	stream := randomData(2*cos.MinPartSize+1234, 7)
	up, err := b.UploadStream(ctx, "streamed", bytes.NewReader(stream), cos.PutOptions{}, cos.MinPartSize, 2)
	if err != nil {
		t.Fatalf("UploadStream: %v", err)
	}
	if data, info := readAll(t, c, newBucket, "streamed", cos.GetOptions{}); !bytes.Equal(data, stream) || info.ETag != up.ETag {
		t.Errorf("streamed object: %d bytes (want %d), ETag %q vs %q", len(data), len(stream), info.ETag, up.ETag)
	}

	// Deletes.
	if err := b.Delete(ctx, "top.txt"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := b.Delete(ctx, "top.txt"); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	if err := b.DeleteMany(ctx, []string{"dir a/copy", "dir a/renamed", "never-existed"}); err != nil {
		t.Fatalf("DeleteMany: %v", err)
	}
	_, err = b.Head(ctx, "dir a/copy")
	wantKind(t, "Head after DeleteMany", err, cos.ErrNotFound)

	wantKind(t, "DeleteBucket of a non-empty bucket", c.DeleteBucket(ctx, newBucket), cos.ErrBucketNotEmpty)
	if err := c.EmptyAndDeleteBucket(ctx, newBucket); err != nil {
		t.Fatalf("EmptyAndDeleteBucket: %v", err)
	}
	wantKind(t, "HeadBucket after delete", c.HeadBucket(ctx, newBucket), cos.ErrNotFound)
}

func randomData(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func TestIntegrationLargeUploadWithOneSecondTokens(t *testing.T) {
	env := emulatortest.Start(t)
	env.SetAccessTokenLifetime(time.Second)
	// Every COS request takes at least 300 ms, so the upload outlives
	// several token lifetimes whatever the machine's speed.
	env.COSFaults().SetLatency(300 * time.Millisecond)
	c := bearerClient(t, env)
	data := randomData(64<<20, 64)
	mark := env.AuditLen()

	info, err := c.UploadStream(ctxFor(t), env.Bucket, "big.bin", bytes.NewReader(data), cos.PutOptions{}, cos.MinPartSize, 4)
	if err != nil {
		t.Fatalf("UploadStream of 64 MiB with 1 s tokens: %v", err)
	}
	env.COSFaults().SetLatency(0)
	if info.Size != int64(len(data)) {
		t.Errorf("Size = %d", info.Size)
	}
	rc, _, err := c.GetObject(ctxFor(t), env.Bucket, "big.bin", cos.GetOptions{})
	if err != nil {
		t.Fatalf("GetObject: %v", err)
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		t.Fatalf("read back: %v", err)
	}
	if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Errorf("object content differs from what was uploaded")
	}
	exchanges := 0
	for _, e := range env.AuditSince(mark) {
		if e.Service == "iam" && e.Status == 200 {
			exchanges++
		}
	}
	if exchanges < 2 {
		t.Errorf("%d token exchanges during an upload of several seconds with 1 s tokens; the token was not refreshed", exchanges)
	}
}

func TestIntegrationDenied(t *testing.T) {
	env := emulatortest.Start(t)
	other := emulatortest.Start(t)
	ctx := ctxFor(t)

	// An access token of another IAM (different signing key).
	foreignTok, err := podTokens(t, other, "default", emulatortest.WriterProfileID).Token(ctx)
	if err != nil {
		t.Fatalf("token from the other emulator: %v", err)
	}
	// An access token that has expired.
	env.SetAccessTokenLifetime(time.Second)
	expiredTok, err := podTokens(t, env, "default", emulatortest.WriterProfileID).Token(ctx)
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	env.SetAccessTokenLifetime(time.Hour)
	time.Sleep(time.Until(expiredTok.Expiry) + 1500*time.Millisecond)

	tests := []struct {
		name string
		src  iam.Source
		op   func(*cos.Client) error
		kind error
	}{
		{"expired token", fixedToken(expiredTok.AccessToken), headTestBucket(env), cos.ErrAccessDenied},
		{"foreign token", fixedToken(foreignTok.AccessToken), headTestBucket(env), cos.ErrAccessDenied},
		{"garbage token", fixedToken("not-a-jwt"), headTestBucket(env), cos.ErrAccessDenied},
		{"reader cannot put", podTokens(t, env, "readers", emulatortest.ReaderProfileID), func(c *cos.Client) error {
			_, err := c.PutObject(ctx, env.Bucket, "denied", bytes.NewReader([]byte("x")), 1, cos.PutOptions{})
			return err
		}, cos.ErrAccessDenied},
		// IAM refuses to exchange: no request is sent, and the error is no
		// credentials (EIO at a writer), naming IAM's reason.
		{"pod not trusted by the profile", podTokens(t, env, "readers", emulatortest.WriterProfileID), headTestBucket(env), cos.ErrNoCredentials},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, env, func(o *cos.Options) { o.Tokens = tt.src })
			err := tt.op(c)
			wantKind(t, tt.name, err, tt.kind)
			for _, secret := range []string{expiredTok.AccessToken, foreignTok.AccessToken} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error text contains an access token")
				}
			}
		})
	}

	// The reader may still read.
	reader := newClient(t, env, func(o *cos.Options) { o.Tokens = podTokens(t, env, "readers", emulatortest.ReaderProfileID) })
	if _, err := reader.ListObjects(ctx, env.Bucket, cos.ListOptions{}); err != nil {
		t.Errorf("reader ListObjects: %v", err)
	}
}

type fixedToken string

func (f fixedToken) Token(context.Context) (iam.Token, error) {
	return iam.Token{AccessToken: string(f), Expiry: time.Now().Add(time.Hour)}, nil
}

func headTestBucket(env *emulatortest.Env) func(*cos.Client) error {
	return func(c *cos.Client) error {
		_, err := c.HeadObject(context.Background(), env.Bucket, "anything")
		return err
	}
}

func TestIntegrationStaleTokenIsInvalidatedAndRetried(t *testing.T) {
	env := emulatortest.Start(t)
	env.SetAccessTokenLifetime(time.Second)
	// The cache's clock runs a minute behind the emulator's, so it keeps
	// handing out a token COS already considers expired: the situation of a
	// token revoked early. COS must answer 403, and the client must drop
	// that token, exchange again and succeed on its single retry.
	lagging := func() time.Time { return time.Now().Add(-time.Minute) }
	src := podTokensWith(t, env, "default", emulatortest.WriterProfileID, iam.CachingOptions{Now: lagging})
	c := newClient(t, env, func(o *cos.Options) { o.Tokens = src })
	ctx := ctxFor(t)
	first, err := src.Token(ctx)
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	time.Sleep(time.Until(first.Expiry) + 1500*time.Millisecond)

	mark := env.AuditLen()
	if _, err := c.PutObject(ctx, env.Bucket, "after-expiry", bytes.NewReader([]byte("v")), 1, cos.PutOptions{}); err != nil {
		t.Fatalf("PutObject with a stale cached token: %v", err)
	}
	var got []string
	for _, e := range env.AuditSince(mark) {
		got = append(got, fmt.Sprintf("%s:%s:%d", e.Service, e.Operation, e.Status))
	}
	want := []string{"cos:PutObject:403", "iam:Token:200", "cos:PutObject:200"}
	if len(got) != 3 || got[0] != want[0] || got[2] != want[2] || !strings.HasPrefix(got[1], "iam:") || !strings.HasSuffix(got[1], ":200") {
		t.Errorf("requests %v, want %v", got, want)
	}
}

func TestIntegrationBucketAdmin(t *testing.T) {
	env := emulatortest.Start(t)
	ctx := ctxFor(t)

	// Under bearer auth nothing but the header names the instance. (An HMAC
	// key belongs to one instance, which the emulator uses instead.)
	writer := podTokens(t, env, "default", emulatortest.WriterProfileID)
	noInstance := newClient(t, env, func(o *cos.Options) { o.Tokens = writer; o.ServiceInstanceID = "" })
	wantKind(t, "CreateBucket without the instance header", noInstance.CreateBucket(ctx, "admin-no-instance", ""), cos.ErrInvalidArgument)
	_, err := noInstance.ListBuckets(ctx)
	wantKind(t, "ListBuckets without the instance header", err, cos.ErrInvalidArgument)

	for _, mk := range []struct {
		name   string
		client func(*testing.T, *emulatortest.Env) *cos.Client
	}{{"bearer", bearerClient}, {"hmac", hmacClient}} {
		t.Run(mk.name, func(t *testing.T) {
			c := mk.client(t, env)
			wantKind(t, "CreateBucket in another location", c.CreateBucket(ctx, "admin-"+mk.name, "eu-de-smart"), cos.ErrInvalidLocationConstraint)
			wantKind(t, "CreateBucket of an existing bucket", c.CreateBucket(ctx, env.Bucket, ""), cos.ErrBucketAlreadyExists)
			if err := c.CreateBucket(ctx, "admin-"+mk.name, ""); err != nil {
				t.Fatalf("CreateBucket: %v", err)
			}
			if loc, err := c.BucketLocation(ctx, "admin-"+mk.name); err != nil || !strings.HasPrefix(loc, "us-south") {
				t.Errorf("BucketLocation = %q, %v", loc, err)
			}
			if err := c.DeleteBucket(ctx, "admin-"+mk.name); err != nil {
				t.Fatalf("DeleteBucket: %v", err)
			}
		})
	}
}

func TestIntegrationEmptyAndDeleteBucketOverManyPages(t *testing.T) {
	env := emulatortest.Start(t)
	c := hmacClient(t, env)
	ctx := ctxFor(t)
	const bucket, n = "many-keys", 1234
	if err := c.CreateBucket(ctx, bucket, "us-south-standard"); err != nil {
		t.Fatalf("CreateBucket: %v", err)
	}
	keys := make(chan string)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var putErr error
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range keys {
				if _, err := c.PutObject(ctx, bucket, k, bytes.NewReader([]byte(k)), int64(len(k)), cos.PutOptions{}); err != nil {
					mu.Lock()
					putErr = errors.Join(putErr, err)
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		keys <- fmt.Sprintf("d%02d/k%05d", i%17, i)
	}
	close(keys)
	wg.Wait()
	if putErr != nil {
		t.Fatalf("PutObject: %v", putErr)
	}
	// A pending multipart upload must not keep the bucket alive.
	if _, err := c.CreateMultipartUpload(ctx, bucket, "pending", cos.PutOptions{}); err != nil {
		t.Fatalf("CreateMultipartUpload: %v", err)
	}

	mark := env.AuditLen()
	if err := c.EmptyAndDeleteBucket(ctx, bucket); err != nil {
		t.Fatalf("EmptyAndDeleteBucket: %v", err)
	}
	wantKind(t, "HeadBucket after EmptyAndDeleteBucket", c.HeadBucket(ctx, bucket), cos.ErrNotFound)
	ops := map[string]int{}
	for _, e := range env.AuditSince(mark) {
		ops[e.Operation]++
	}
	if ops["DeleteObjects"] != 2 || ops["AbortMultipartUpload"] != 1 {
		t.Errorf("operations %v, want 2 DeleteObjects (1000 + 234 keys) and 1 AbortMultipartUpload", ops)
	}
}

func TestIntegrationRetriesInjectedFaults(t *testing.T) {
	env := emulatortest.Start(t)
	c := bearerClient(t, env)
	ctx := ctxFor(t)
	for _, kind := range []string{"slow-down", "internal-error", "reset"} {
		t.Run(kind, func(t *testing.T) {
			mark := env.AuditLen()
			rule := faults.Rule{Kind: faults.Kind(kind), Count: 2, Method: "PUT", PathContains: "f-" + kind}
			if err := env.COSFaults().FailNext(rule); err != nil {
				t.Fatalf("FailNext: %v", err)
			}
			if _, err := c.PutObject(ctx, env.Bucket, "f-"+kind, bytes.NewReader([]byte("data")), 4, cos.PutOptions{}); err != nil {
				t.Fatalf("PutObject through two %s faults: %v", kind, err)
			}
			faulted, ok := 0, 0
			for _, e := range env.AuditSince(mark) {
				switch {
				case e.Service != "cos":
				case e.Fault == kind:
					faulted++
				case e.Status == 200:
					ok++
				}
			}
			if faulted != 2 || ok != 1 {
				t.Errorf("audit shows %d faulted and %d successful attempts, want 2 and 1", faulted, ok)
			}
		})
	}
}
