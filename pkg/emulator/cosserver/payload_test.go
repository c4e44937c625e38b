package cosserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const sigLen = 64

// signedChunked builds a STREAMING-AWS4-HMAC-SHA256-PAYLOAD request whose
// chunks are signed by the SDK's stream signer; corrupt alters one chunk
// after signing.
func signedChunked(t *testing.T, e *env, key string, chunks [][]byte, corrupt bool) *http.Request {
	t.Helper()
	encLen, decLen := 0, 0
	for _, c := range append(chunks, nil) {
		encLen += len(fmt.Sprintf("%x", len(c))) + len(";chunk-signature=") + sigLen + 2 + len(c) + 2
		decLen += len(c)
	}
	r := e.req("PUT", "/bkt/"+key, make([]byte, encLen),
		"Content-Encoding", "aws-chunked", "X-Amz-Decoded-Content-Length", fmt.Sprint(decLen))
	now := time.Now()
	signV4(t, r, testKeyID, testSecret, streamingSignedPayload, now)
	auth := r.Header.Get("Authorization")
	seed, err := hex.DecodeString(auth[strings.LastIndex(auth, "=")+1:])
	if err != nil {
		t.Fatal(err)
	}
	ss := v4.NewStreamSigner(aws.Credentials{AccessKeyID: testKeyID, SecretAccessKey: testSecret}, "s3", "us-south", seed)
	var body bytes.Buffer
	for i, c := range append(chunks, nil) {
		sig, err := ss.GetSignature(context.Background(), nil, c, now)
		if err != nil {
			t.Fatal(err)
		}
		if corrupt && i == 0 {
			c = bytes.ToUpper(c)
		}
		fmt.Fprintf(&body, "%x;chunk-signature=%x\r\n%s\r\n", len(c), sig, c)
	}
	if body.Len() != encLen {
		t.Fatalf("encoded length %d, computed %d", body.Len(), encLen)
	}
	r.Body = io.NopCloser(&body)
	return r
}

func TestAWSChunkedPayloads(t *testing.T) {
	e := newEnv(t)
	chunks := [][]byte{bytes.Repeat([]byte("a"), 8192), []byte("bcd"), bytes.Repeat([]byte("e"), 100)}
	want := string(bytes.Join(chunks, nil))
	expect(t, "signed chunks", e.do(signedChunked(t, e, "signed", chunks, false)), 200, "")
	if g := e.bearer(tokReader, "GET", "/bkt/signed", nil); string(g.body) != want {
		t.Errorf("signed chunks stored %d bytes, want %d", len(g.body), len(want))
	}
	expect(t, "tampered chunk refused", e.do(signedChunked(t, e, "tampered2", [][]byte{[]byte("abc")}, true)), 403, "SignatureDoesNotMatch")
	expect(t, "tampered chunk not stored", e.bearer(tokReader, "HEAD", "/bkt/tampered2", nil), 404, "")

	// Unsigned chunks with a trailing checksum, as SDKs send over TLS, here with a bearer token.
	data := "hello trailer"
	crc := crc32.ChecksumIEEE([]byte(data))
	sum := base64.StdEncoding.EncodeToString([]byte{byte(crc >> 24), byte(crc >> 16), byte(crc >> 8), byte(crc)})
	trailerBody := func(checksum string) []byte {
		return []byte(fmt.Sprintf("%x\r\n%s\r\n0\r\nx-amz-checksum-crc32:%s\r\n\r\n", len(data), data, checksum))
	}
	hdr := []string{"X-Amz-Content-Sha256", streamingUnsignedTrailer, "Content-Encoding", "aws-chunked",
		"X-Amz-Decoded-Content-Length", fmt.Sprint(len(data)), "X-Amz-Trailer", "x-amz-checksum-crc32"}
	expect(t, "unsigned trailer", e.bearer(tokManager, "PUT", "/bkt/trailer", trailerBody(sum), hdr...), 200, "")
	if g := e.bearer(tokReader, "GET", "/bkt/trailer", nil); string(g.body) != data {
		t.Errorf("trailer upload stored %q", g.body)
	}
	expect(t, "bad trailer checksum", e.bearer(tokManager, "PUT", "/bkt/trailer2", trailerBody("AAAAAA=="), hdr...), 400, "BadDigest")
	expect(t, "truncated chunk", e.bearer(tokManager, "PUT", "/bkt/trailer3", []byte("ff\r\nshort"), hdr...), 400, "IncompleteBody")
	expect(t, "garbage framing", e.bearer(tokManager, "PUT", "/bkt/trailer4", []byte("zz\r\n"), hdr...), 400, "InvalidRequest")
	expect(t, "signed streaming with bearer", e.bearer(tokManager, "PUT", "/bkt/x", []byte("0\r\n\r\n"),
		"X-Amz-Content-Sha256", streamingSignedPayload), 400, "InvalidRequest")
	expect(t, "bad content sha mode", e.bearer(tokManager, "PUT", "/bkt/x", []byte("x"), "X-Amz-Content-Sha256", "bogus"), 400, "InvalidArgument")
	expect(t, "sha256 checked with bearer", e.bearer(tokManager, "PUT", "/bkt/x", []byte("x"), "X-Amz-Content-Sha256", hashHex([]byte("y"))), 400, "XAmzContentSHA256Mismatch")
}

func TestPayloadLimit(t *testing.T) {
	e := newEnv(t)
	// Declared sizes beyond 5 GiB are refused before any byte is read.
	r := e.req("PUT", "/bkt/huge", nil, "Authorization", "Bearer "+tokManager, "X-Amz-Content-Sha256", streamingUnsignedTrailer,
		"X-Amz-Decoded-Content-Length", fmt.Sprint(maxPutSize+1))
	r.Body = io.NopCloser(strings.NewReader("0\r\n\r\n"))
	expect(t, "declared too large", e.do(r), 400, "EntityTooLarge")
	// Bodies that run past the limit fail while streaming.
	p := &payload{r: strings.NewReader("0123456789"), size: -1, max: -1}
	if e := p.limit(4); e != nil {
		t.Fatal(e)
	}
	if _, err := io.ReadAll(p); p.failure() == nil || storeError(err).Code != "EntityTooLarge" {
		t.Errorf("limit: %v", err)
	}
}
