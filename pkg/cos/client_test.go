package cos

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

func TestNewValidatesOptions(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"no auth", Options{Endpoint: "http://127.0.0.1:1"}, "exactly one of"},
		{"both auths", Options{Endpoint: "http://127.0.0.1:1", Tokens: staticSource("t"), HMAC: &HMAC{"a", "b"}}, "exactly one of"},
		{"hmac without secret", Options{Endpoint: "http://127.0.0.1:1", HMAC: &HMAC{AccessKeyID: "a"}}, "secret"},
		{"no endpoint", Options{Tokens: staticSource("t")}, "Endpoint is required"},
		{"endpoint without scheme", Options{Endpoint: "127.0.0.1:9000", Tokens: staticSource("t")}, "not an http(s) URL"},
		{"bearer", Options{Endpoint: "http://127.0.0.1:1", Tokens: staticSource("t")}, ""},
		{"hmac", Options{Endpoint: "https://s3.us-south.cloud-object-storage.appdomain.cloud", HMAC: &HMAC{"a", "b"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.opts)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// runAllOps calls one operation of every kind the header tests check.
func runAllOps(t *testing.T, c *Client) {
	t.Helper()
	ctx := testContext(t)
	steps := []struct {
		name string
		fn   func() error
	}{
		{"HeadObject", func() error { _, err := c.HeadObject(ctx, "b", "k"); return err }},
		{"GetObject", func() error {
			rc, _, err := c.GetObject(ctx, "b", "k", GetOptions{})
			if err == nil {
				_, err = io.ReadAll(rc)
				rc.Close()
			}
			return err
		}},
		{"PutObject", func() error { _, err := c.PutObject(ctx, "b", "k", body("hello"), 5, PutOptions{}); return err }},
		{"ListObjects", func() error { _, err := c.ListObjects(ctx, "b", ListOptions{Prefix: "p/"}); return err }},
		{"DeleteObject", func() error { return c.DeleteObject(ctx, "b", "k") }},
		{"DeleteObjects", func() error { return c.DeleteObjects(ctx, "b", []string{"k1", "k2"}) }},
		{"HeadBucket", func() error { return c.HeadBucket(ctx, "b") }},
		{"BucketLocation", func() error { _, err := c.BucketLocation(ctx, "b"); return err }},
		{"ListBuckets", func() error { _, err := c.ListBuckets(ctx); return err }},
		{"CreateBucket", func() error { return c.CreateBucket(ctx, "newbucket", "us-south-smart") }},
	}
	for _, s := range steps {
		if err := s.fn(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
	}
}

func TestBearerOnEveryRequestIncludingRetries(t *testing.T) {
	// Every operation's first attempt fails with 503 SlowDown, so each one
	// is sent twice; both attempts must carry a freshly resolved token.
	var n atomic.Int64
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, b []byte) {
		if n.Add(1)%2 == 1 {
			ibmError(w, r, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.", "r-slow")
			return
		}
		okHandler(w, r, b)
	})
	src := &fakeSource{}
	c := testClient(t, rec, func(o *Options) { o.Tokens = src })
	runAllOps(t, c)

	reqs := rec.requests()
	if len(reqs) != 20 {
		t.Fatalf("server saw %d requests, want 20 (10 operations, each retried once)", len(reqs))
	}
	tokens := map[string]bool{}
	for _, r := range reqs {
		auth := r.Header.Get("Authorization")
		if !strings.HasPrefix(auth, "Bearer tok-") {
			t.Errorf("%s %s: Authorization %q, want a bearer token", r.Method, r.Path, auth)
		}
		tokens[auth] = true
		if h := r.Header.Get("X-Amz-Date"); h != "" {
			t.Errorf("%s %s: X-Amz-Date %q set under bearer auth (SigV4 leaked in)", r.Method, r.Path, h)
		}
		if strings.Contains(auth, "AWS4-HMAC-SHA256") {
			t.Errorf("%s %s: SigV4 Authorization under bearer auth", r.Method, r.Path)
		}
		if ua := r.Header.Get("User-Agent"); !strings.HasPrefix(ua, "cosmount/1.2.3") {
			t.Errorf("%s %s: User-Agent %q, want cosmount/1.2.3 first", r.Method, r.Path, ua)
		}
		wantInstance := r.Op() == "ListBuckets" || r.Op() == "CreateBucket"
		if got := r.Header.Get("ibm-service-instance-id"); (got == "instance-1") != wantInstance || (got != "" && !wantInstance) {
			t.Errorf("%s: ibm-service-instance-id %q, want it only on ListBuckets and CreateBucket", r.Op(), got)
		}
	}
	if len(tokens) != len(reqs) {
		t.Errorf("%d distinct tokens over %d attempts: the identity must be resolved per attempt", len(tokens), len(reqs))
	}
	if calls, _ := src.counts(); calls != len(reqs) {
		t.Errorf("token source called %d times for %d attempts", calls, len(reqs))
	}
}

func TestHMACSignsWithSigV4(t *testing.T) {
	rec := newRecorder(t, okHandler)
	c := testClient(t, rec, func(o *Options) {
		o.Tokens = nil
		o.HMAC = &HMAC{AccessKeyID: "test-access-key", SecretAccessKey: "test-secret-key"}
	})
	runAllOps(t, c)
	for _, r := range rec.requests() {
		auth := r.Header.Get("Authorization")
		if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 Credential=test-access-key/") || !strings.Contains(auth, "/us-south/s3/aws4_request") {
			t.Errorf("%s %s: Authorization %q, want SigV4 for us-south/s3", r.Method, r.Path, auth)
		}
		if !strings.Contains(auth, "Signature=") || r.Header.Get("X-Amz-Date") == "" {
			t.Errorf("%s %s: SigV4 signature or X-Amz-Date missing", r.Method, r.Path)
		}
		if got := r.Header.Get("X-Amz-Content-Sha256"); got != "UNSIGNED-PAYLOAD" {
			t.Errorf("%s %s: X-Amz-Content-Sha256 %q, want UNSIGNED-PAYLOAD", r.Method, r.Path, got)
		}
		for k, vs := range r.Header {
			for _, v := range vs {
				if strings.Contains(v, "test-secret-key") {
					t.Errorf("secret sent in header %s", k)
				}
			}
		}
	}
}

func TestForbiddenInvalidatesAndRetriesOnce(t *testing.T) {
	// The server accepts only a token handed out after an invalidation.
	staleUntilInvalidated := func(_, inv int) string {
		if inv == 0 {
			return "stale"
		}
		return "fresh"
	}
	tests := []struct {
		name            string
		token           func(calls, inv int) string
		alwaysDeny      bool
		hmac            bool
		wantErr         bool
		wantRequests    int
		wantInvalidates int
	}{
		{name: "stale token refreshed", token: staleUntilInvalidated, wantRequests: 2, wantInvalidates: 1},
		{name: "denied after refresh too", token: staleUntilInvalidated, alwaysDeny: true, wantErr: true, wantRequests: 2, wantInvalidates: 1},
		{name: "hmac is not retried", hmac: true, alwaysDeny: true, wantErr: true, wantRequests: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, b []byte) {
				if tt.alwaysDeny || r.Header.Get("Authorization") != "Bearer fresh" {
					ibmError(w, r, http.StatusForbidden, "AccessDenied", "Access Denied", "r-403")
					return
				}
				if string(b) != "payload" {
					t.Errorf("retried PUT body %q, want the whole payload again", b)
				}
				w.Header().Set("ETag", `"e"`)
			})
			src := &fakeSource{token: tt.token}
			c := testClient(t, rec, func(o *Options) {
				o.Tokens = src
				if tt.hmac {
					o.Tokens, o.HMAC = nil, &HMAC{"a", "b"}
				}
			})
			_, err := c.PutObject(testContext(t), "b", "k", body("payload"), 7, PutOptions{})
			if tt.wantErr {
				if !errors.Is(err, ErrAccessDenied) {
					t.Fatalf("PutObject error = %v, want ErrAccessDenied", err)
				}
			} else if err != nil {
				t.Fatalf("PutObject: %v", err)
			}
			if got := len(rec.requests()); got != tt.wantRequests {
				t.Errorf("requests = %d, want %d (403 is not retried by the SDK, only once by the client)", got, tt.wantRequests)
			}
			if _, inv := src.counts(); inv != tt.wantInvalidates {
				t.Errorf("invalidations = %d, want %d", inv, tt.wantInvalidates)
			}
		})
	}
}

func TestForbiddenWithoutInvalidatorIsNotRetried(t *testing.T) {
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		ibmError(w, r, http.StatusForbidden, "AccessDenied", "Access Denied", "r-403")
	})
	c := testClient(t, rec, func(o *Options) { o.Tokens = staticSource("only") })
	if _, err := c.HeadObject(testContext(t), "b", "k"); !errors.Is(err, ErrAccessDenied) {
		t.Fatalf("HeadObject error = %v, want ErrAccessDenied", err)
	}
	if got := len(rec.requests()); got != 1 {
		t.Errorf("requests = %d, want 1", got)
	}
}

func TestTokenSourceFailureIsNoCredentialsAndNothingIsSent(t *testing.T) {
	rec := newRecorder(t, okHandler)
	src := &fakeSource{err: errors.New("BXNIM0398E: Selected trusted profile not eligible")}
	c := testClient(t, rec, func(o *Options) { o.Tokens = src })
	_, err := c.HeadObject(testContext(t), "b", "k")
	if !errors.Is(err, ErrNoCredentials) || errors.Is(err, ErrAccessDenied) || !strings.Contains(err.Error(), "BXNIM0398E") {
		t.Fatalf("HeadObject error = %v, want ErrNoCredentials naming the IAM error", err)
	}
	if got := len(rec.requests()); got != 0 {
		t.Errorf("%d requests went out without a token", got)
	}
	if _, inv := src.counts(); inv != 0 {
		t.Errorf("an IAM failure must not invalidate (got %d)", inv)
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name         string
		failures     int64 // how many first requests fail
		fail         func(w http.ResponseWriter, r *http.Request)
		wantKind     error
		wantRequests int
	}{
		{name: "500 twice then ok", failures: 2, fail: func(w http.ResponseWriter, r *http.Request) {
			ibmError(w, r, http.StatusInternalServerError, "InternalError", "We encountered an internal error.", "r-500")
		}, wantRequests: 3},
		{name: "503 always", failures: 100, fail: func(w http.ResponseWriter, r *http.Request) {
			ibmError(w, r, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.", "r-503")
		}, wantKind: ErrUnavailable, wantRequests: 3},
		{name: "connection reset then ok", failures: 1, fail: resetConnection, wantRequests: 2},
		{name: "400 not retried", failures: 100, fail: func(w http.ResponseWriter, r *http.Request) {
			ibmError(w, r, http.StatusBadRequest, "InvalidArgument", "Invalid Argument", "r-400")
		}, wantKind: ErrInvalidArgument, wantRequests: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n atomic.Int64
			rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, b []byte) {
				if n.Add(1) <= tt.failures {
					tt.fail(w, r)
					return
				}
				okHandler(w, r, b)
			})
			c := testClient(t, rec, nil)
			_, err := c.PutObject(testContext(t), "b", "k", body("hello"), 5, PutOptions{})
			if tt.wantKind == nil && err != nil {
				t.Fatalf("PutObject: %v", err)
			}
			if tt.wantKind != nil && !errors.Is(err, tt.wantKind) {
				t.Fatalf("PutObject error = %v, want %v", err, tt.wantKind)
			}
			if got := len(rec.requests()); got != tt.wantRequests {
				t.Errorf("requests = %d, want %d", got, tt.wantRequests)
			}
		})
	}
}

// resetConnection drops the TCP connection with an RST instead of answering.
func resetConnection(w http.ResponseWriter, _ *http.Request) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("response writer cannot hijack")
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		tcp.SetLinger(0)
	}
	conn.Close()
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		name     string
		method   string // HEAD uses HeadObject, GET uses GetObject, PUT CreateBucket
		status   int
		code     string
		wantKind error
	}{
		{"no such key", "GET", 404, "NoSuchKey", ErrNotFound},
		{"no such bucket", "GET", 404, "NoSuchBucket", ErrNotFound},
		{"head 404 without body", "HEAD", 404, "", ErrNotFound},
		{"head 403 without body", "HEAD", 403, "", ErrAccessDenied},
		{"access denied", "GET", 403, "AccessDenied", ErrAccessDenied},
		{"precondition", "GET", 412, "PreconditionFailed", ErrPreconditionFailed},
		{"invalid range", "GET", 416, "InvalidRange", ErrInvalidRange},
		{"bucket exists", "PUT", 409, "BucketAlreadyExists", ErrBucketAlreadyExists},
		{"bad location", "PUT", 400, "InvalidLocationConstraint", ErrInvalidLocationConstraint},
		{"missing instance", "PUT", 400, "InvalidArgument", ErrInvalidArgument},
		{"unknown 400", "GET", 400, "SomethingNew", ErrInvalidArgument},
		{"not implemented", "GET", 501, "NotImplemented", ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
				ibmError(w, r, tt.status, tt.code, "the message", "rid-"+tt.code)
			})
			c := testClient(t, rec, func(o *Options) { o.MaxAttempts = 1; o.Tokens = staticSource("t") })
			ctx := testContext(t)
			var err error
			switch tt.method {
			case "HEAD":
				_, err = c.HeadObject(ctx, "b", "dir/k")
			case "GET":
				_, _, err = c.GetObject(ctx, "b", "dir/k", GetOptions{})
			case "PUT":
				err = c.CreateBucket(ctx, "b", "us-south-smart")
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T) is not a *cos.Error", err, err)
			}
			if !errors.Is(err, tt.wantKind) {
				t.Errorf("kind = %v, want %v", e.Kind, tt.wantKind)
			}
			if e.StatusCode != tt.status {
				t.Errorf("StatusCode = %d, want %d", e.StatusCode, tt.status)
			}
			if e.RequestID != "rid-"+tt.code {
				t.Errorf("RequestID = %q, want %q", e.RequestID, "rid-"+tt.code)
			}
			if tt.method != "HEAD" {
				if e.Code != tt.code || e.Message != "the message" {
					t.Errorf("Code, Message = %q, %q; want %q from the IBM error body", e.Code, e.Message, tt.code)
				}
			}
			if tt.method != "PUT" && (e.Bucket != "b" || e.Key != "dir/k") {
				t.Errorf("Bucket/Key = %q/%q", e.Bucket, e.Key)
			}
			if strings.Contains(err.Error(), "Bearer") {
				t.Errorf("error text mentions the credential: %v", err)
			}
		})
	}
}

func TestDeleteObjectMissingKeyIsNotAnError(t *testing.T) {
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		if strings.HasPrefix(r.URL.Path, "/gone/") {
			ibmError(w, r, 404, "NoSuchBucket", "The specified bucket does not exist.", "r")
			return
		}
		ibmError(w, r, 404, "NoSuchKey", "The specified key does not exist.", "r")
	})
	c := testClient(t, rec, nil)
	ctx := testContext(t)
	if err := c.DeleteObject(ctx, "b", "missing"); err != nil {
		t.Errorf("DeleteObject of a missing key: %v", err)
	}
	if err := c.DeleteObject(ctx, "gone", "k"); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteObject in a missing bucket: %v, want ErrNotFound", err)
	}
}

type countingObserver struct {
	ops   []string
	bytes map[string]int64
	errs  int
}

func (o *countingObserver) ObserveRequest(op string, n int64, err error) {
	o.ops = append(o.ops, op)
	if o.bytes == nil {
		o.bytes = map[string]int64{}
	}
	o.bytes[op] += n
	if err != nil {
		o.errs++
	}
}

func TestObserverSeesEachOperationOnce(t *testing.T) {
	var n atomic.Int64
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, b []byte) {
		if n.Add(1) == 1 {
			ibmError(w, r, 500, "InternalError", "retry me", "r")
			return
		}
		okHandler(w, r, b)
	})
	obs := &countingObserver{}
	c := testClient(t, rec, func(o *Options) { o.Observer = obs })
	ctx := testContext(t)
	if _, err := c.PutObject(ctx, "b", "k", body("hello"), 5, PutOptions{}); err != nil {
		t.Fatal(err)
	}
	rc, _, err := c.GetObject(ctx, "b", "k", GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(rc)
	rc.Close()
	rc.Close()
	if strings.Join(obs.ops, ",") != "PutObject,GetObject" || obs.bytes["PutObject"] != 5 || obs.bytes["GetObject"] != 5 || obs.errs != 0 {
		t.Errorf("observer saw %v bytes %v errors %d; want PutObject,GetObject with 5 bytes each", obs.ops, obs.bytes, obs.errs)
	}
}

// pinningSource also offers InvalidateToken, as iam.CachingSource does.
type pinningSource struct {
	fakeSource
	dropped []string
}

func (p *pinningSource) InvalidateToken(tok string) {
	p.mu.Lock()
	p.dropped = append(p.dropped, tok)
	p.invalidated++
	p.mu.Unlock()
}

func TestForbiddenInvalidatesExactlyTheRefusedToken(t *testing.T) {
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, b []byte) {
		if r.Header.Get("Authorization") == "Bearer tok-1" {
			ibmError(w, r, http.StatusForbidden, "AccessDenied", "Access Denied", "r-403")
			return
		}
		okHandler(w, r, b)
	})
	src := &pinningSource{}
	c := testClient(t, rec, func(o *Options) { o.Tokens = src })
	if _, err := c.HeadObject(testContext(t), "b", "k"); err != nil {
		t.Fatalf("HeadObject: %v", err)
	}
	if len(src.dropped) != 1 || src.dropped[0] != "tok-1" {
		t.Errorf("InvalidateToken calls %q, want exactly the refused tok-1", src.dropped)
	}
}
