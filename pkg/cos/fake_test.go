package cos

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/iam"
)

// seen is one request as the fake server received it.
type seen struct {
	Method string
	Path   string
	Query  string
	Header http.Header
	Body   []byte
}

// Op names the S3 operation of a request the way the tests need it.
func (s seen) Op() string {
	bucketOnly := strings.Count(strings.Trim(s.Path, "/"), "/") == 0
	switch {
	case s.Path == "/" && s.Method == http.MethodGet:
		return "ListBuckets"
	case s.Method == http.MethodPut && bucketOnly && s.Query == "":
		return "CreateBucket"
	}
	return s.Method + " " + s.Path
}

// recorder is an httptest server that keeps every request and answers with
// the handler the test gives it.
type recorder struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []seen
}

func newRecorder(t *testing.T, h func(w http.ResponseWriter, r *http.Request, body []byte)) *recorder {
	t.Helper()
	rec := &recorder{}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.got = append(rec.got, seen{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body})
		rec.mu.Unlock()
		w.Header().Set("x-amz-request-id", "req-"+fmt.Sprint(time.Now().UnixNano()))
		h(w, r, body)
	}))
	t.Cleanup(rec.srv.Close)
	return rec
}

func (r *recorder) requests() []seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]seen(nil), r.got...)
}

// ibmError writes COS's error document, including IBM's httpStatusCode
// element and without HostId; HEAD answers carry no body.
func ibmError(w http.ResponseWriter, r *http.Request, status int, code, msg, requestID string) {
	w.Header().Set("x-amz-request-id", requestID)
	w.Header().Set("X-Clv-Request-Id", requestID)
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Error><Code>%s</Code><Message>%s</Message><Resource>%s</Resource><RequestId>%s</RequestId><httpStatusCode>%d</httpStatusCode></Error>`,
		code, msg, r.URL.Path, requestID, status)
}

// fakeSource hands out "tok-1", "tok-2", ... one per call, so a test can
// see that every attempt asked for a token.
type fakeSource struct {
	mu          sync.Mutex
	calls       int
	invalidated int
	token       func(calls, invalidated int) string
	err         error
}

func (s *fakeSource) Token(context.Context) (iam.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return iam.Token{}, s.err
	}
	s.calls++
	tok := fmt.Sprintf("tok-%d", s.calls)
	if s.token != nil {
		tok = s.token(s.calls, s.invalidated)
	}
	return iam.Token{AccessToken: tok, Expiry: time.Now().Add(time.Hour)}, nil
}

func (s *fakeSource) Invalidate() {
	s.mu.Lock()
	s.invalidated++
	s.mu.Unlock()
}

func (s *fakeSource) counts() (calls, invalidated int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls, s.invalidated
}

// staticSource is a Source that is not an Invalidator.
type staticSource string

func (s staticSource) Token(context.Context) (iam.Token, error) {
	return iam.Token{AccessToken: string(s), Expiry: time.Now().Add(time.Hour)}, nil
}

// testClient builds a client for rec's server with quick retries.
func testClient(t *testing.T, rec *recorder, mod func(*Options)) *Client {
	t.Helper()
	opts := Options{
		Endpoint:          rec.srv.URL,
		UsePathStyle:      true,
		Tokens:            &fakeSource{},
		ServiceInstanceID: "instance-1",
		MaxAttempts:       3,
		MaxBackoff:        10 * time.Millisecond,
		Version:           "1.2.3",
	}
	if mod != nil {
		mod(&opts)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// okHandler answers every operation the header tests use with a minimal
// successful response.
func okHandler(w http.ResponseWriter, r *http.Request, _ []byte) {
	q := r.URL.Query()
	switch {
	case r.URL.Path == "/" && r.Method == http.MethodGet:
		io.WriteString(w, `<ListAllMyBucketsResult><Buckets><Bucket><Name>b1</Name><CreationDate>2026-01-02T03:04:05.000Z</CreationDate></Bucket></Buckets></ListAllMyBucketsResult>`)
	case q.Has("list-type"):
		io.WriteString(w, `<ListBucketResult><Name>b</Name><IsTruncated>false</IsTruncated></ListBucketResult>`)
	case q.Has("delete"):
		io.WriteString(w, `<DeleteResult></DeleteResult>`)
	case q.Has("location"):
		io.WriteString(w, `<LocationConstraint>us-south-smart</LocationConstraint>`)
	case r.Method == http.MethodHead, r.Method == http.MethodGet:
		w.Header().Set("ETag", `"e1"`)
		w.Header().Set("Content-Length", "5")
		w.Header().Set("Last-Modified", "Mon, 02 Jan 2026 03:04:05 GMT")
		if r.Method == http.MethodGet {
			io.WriteString(w, "hello")
		}
	case r.Method == http.MethodPut:
		w.Header().Set("ETag", `"e2"`)
	case r.Method == http.MethodDelete:
		w.WriteHeader(http.StatusNoContent)
	}
}

func body(s string) io.ReadSeeker { return bytes.NewReader([]byte(s)) }
