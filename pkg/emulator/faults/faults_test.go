package faults

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/audit"
)

// fakeClock is a settable time source.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// serve starts a server whose handler answers 200 "ok" behind the injector
// and the audit middleware, as the emulator composes them.
func serve(t *testing.T, opts Options) (*Injector, *audit.Log, *httptest.Server) {
	t.Helper()
	inj := New(opts)
	log := audit.NewLog(nil, 0)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	srv := httptest.NewServer(log.Middleware("cos", inj.Middleware(ok)))
	t.Cleanup(srv.Close)
	return inj, log, srv
}

func do(t *testing.T, srv *httptest.Server, method, path string, hdr map[string]string) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

func TestRulesMatchAndCount(t *testing.T) {
	type call struct {
		method, path string
		hdr          map[string]string
		want         int
	}
	tests := []struct {
		name  string
		rules []Rule
		calls []call
	}{
		{
			name:  "any request, twice",
			rules: []Rule{{Kind: InternalError, Count: 2}},
			calls: []call{{"GET", "/b/k", nil, 500}, {"PUT", "/b/k", nil, 500}, {"GET", "/b/k", nil, 200}},
		},
		{
			name:  "method filter",
			rules: []Rule{{Kind: SlowDown, Count: 1, Method: "put"}},
			calls: []call{{"GET", "/b/k", nil, 200}, {"PUT", "/b/k", nil, 503}, {"PUT", "/b/k", nil, 200}},
		},
		{
			name:  "operation filter",
			rules: []Rule{{Kind: ServiceUnavailable, Count: 1, Operation: "UploadPart"}},
			calls: []call{
				{"PUT", "/b/k", nil, 200},
				{"PUT", "/b/k?partNumber=1&uploadId=u", map[string]string{"x-amz-copy-source": "/b/src"}, 200},
				{"PUT", "/b/k?partNumber=1&uploadId=u", nil, 503},
				{"PUT", "/b/k?partNumber=2&uploadId=u", nil, 200},
			},
		},
		{
			name:  "path filter",
			rules: []Rule{{Kind: InternalError, Count: 1, PathContains: "/dir/"}},
			calls: []call{{"GET", "/b/other", nil, 200}, {"GET", "/b/dir/x", nil, 500}, {"GET", "/b/dir/x", nil, 200}},
		},
		{
			name:  "all filters, first matching rule wins",
			rules: []Rule{{Kind: SlowDown, Count: 1, Method: "GET", Operation: "GetObject", PathContains: "x"}, {Kind: InternalError, Count: 1}},
			calls: []call{{"HEAD", "/b/x", nil, 500}, {"GET", "/b/x", nil, 503}, {"GET", "/b/x", nil, 200}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inj, _, srv := serve(t, Options{Classify: S3Classifier("")})
			for _, r := range tt.rules {
				if err := inj.FailNext(r); err != nil {
					t.Fatal(err)
				}
			}
			for i, c := range tt.calls {
				resp, _, err := do(t, srv, c.method, c.path, c.hdr)
				if err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
				if resp.StatusCode != c.want {
					t.Errorf("call %d %s %s: status %d, want %d", i, c.method, c.path, resp.StatusCode, c.want)
				}
			}
			if n := len(inj.Status().Rules); n != 0 {
				t.Errorf("%d rules left, want 0", n)
			}
		})
	}
}

func TestS3ErrorBody(t *testing.T) {
	tests := []struct {
		kind   Kind
		status int
		code   string
	}{
		{InternalError, 500, "InternalError"},
		{SlowDown, 503, "SlowDown"},
		{ServiceUnavailable, 503, "ServiceUnavailable"},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			inj, log, srv := serve(t, Options{})
			if err := inj.FailNext(Rule{Kind: tt.kind, Count: 2}); err != nil {
				t.Fatal(err)
			}
			resp, body, err := do(t, srv, "GET", "/bucket/a&b", nil)
			if err != nil {
				t.Fatal(err)
			}
			var e struct {
				Code, Message, Resource, RequestId string
				HTTPStatusCode                     int `xml:"httpStatusCode"`
			}
			if err := xml.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			if !strings.HasPrefix(body, `<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Error>`) {
				t.Errorf("body %q lacks IBM's XML prolog", body)
			}
			id := resp.Header.Get("x-amz-request-id")
			if resp.StatusCode != tt.status || e.Code != tt.code || e.HTTPStatusCode != tt.status || e.Resource != "/bucket/a&b" ||
				e.RequestId != id || id == "" || resp.Header.Get("X-Clv-Request-Id") != id {
				t.Errorf("got status %d %+v headers %v", resp.StatusCode, e, resp.Header)
			}
			resp, body, err = do(t, srv, "HEAD", "/bucket/k", nil)
			if err != nil || resp.StatusCode != tt.status || body != "" {
				t.Errorf("HEAD: %v status %v body %q, want %d and no body", err, resp.StatusCode, body, tt.status)
			}
			entries := log.Entries()
			if len(entries) != 2 || entries[0].Fault != string(tt.kind) || entries[0].ErrorCode != tt.code || entries[0].RequestID != id {
				t.Errorf("audit %+v", entries)
			}
		})
	}
}

func TestIAMErrorBody(t *testing.T) {
	inj, _, srv := serve(t, Options{Style: StyleIAM, Classify: IAMClassifier})
	if err := inj.FailNext(Rule{Kind: InternalError, Count: 1, Operation: "Token"}); err != nil {
		t.Fatal(err)
	}
	if resp, _, err := do(t, srv, "GET", "/identity/keys", nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("keys: %v %v", err, resp)
	}
	resp, body, err := do(t, srv, "POST", "/identity/token", nil)
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		ErrorCode string `json:"errorCode"`
		Context   struct {
			RequestID string `json:"requestId"`
		} `json:"context"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if resp.StatusCode != 500 || e.ErrorCode == "" || e.Context.RequestID != resp.Header.Get("transaction-id") ||
		resp.Header.Get("ibm-cloud-service-name") != "iam-identity" {
		t.Errorf("status %d body %s headers %v", resp.StatusCode, body, resp.Header)
	}
}

func TestReset(t *testing.T) {
	inj, log, srv := serve(t, Options{})
	if err := inj.FailNext(Rule{Kind: Reset, Count: 1}); err != nil {
		t.Fatal(err)
	}
	_, _, err := do(t, srv, "GET", "/b/k", nil)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("got %v, want a connection reset", err)
	}
	if resp, _, err := do(t, srv, "GET", "/b/k", nil); err != nil || resp.StatusCode != 200 {
		t.Errorf("after the reset: %v %v", err, resp)
	}
	// The reset request's entry is recorded after the handler returns, which
	// can be after the client already saw the reset and sent the next request.
	var e []audit.Entry
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if e = log.Entries(); len(e) == 2 {
			break
		}
	}
	faulted := 0
	for _, x := range e {
		if x.Fault == string(Reset) {
			faulted++
		}
	}
	if len(e) != 2 || faulted != 1 {
		t.Errorf("audit %+v", e)
	}
}

func TestUnavailableWindow(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	inj, _, srv := serve(t, Options{Clock: clock.Now})
	if err := inj.Unavailable(time.Minute, SlowDown); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if resp, _, err := do(t, srv, "GET", "/b/k", nil); err != nil || resp.StatusCode != 503 {
			t.Fatalf("request %d in the window: %v %v", i, err, resp)
		}
	}
	if s := inj.Status(); s.UnavailableKind != SlowDown {
		t.Errorf("status %+v", s)
	}
	clock.Advance(time.Minute)
	if resp, _, err := do(t, srv, "GET", "/b/k", nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the window: %v %v", err, resp)
	}
	if s := inj.Status(); !s.UnavailableUntil.IsZero() {
		t.Errorf("status after window %+v", s)
	}
	if err := inj.Unavailable(time.Hour, Reset); err != nil {
		t.Fatal(err)
	}
	if _, _, err := do(t, srv, "GET", "/b/k", nil); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("reset window: got %v", err)
	}
	inj.Clear()
	if resp, _, err := do(t, srv, "GET", "/b/k", nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after Clear: %v %v", err, resp)
	}
}

func TestLatency(t *testing.T) {
	inj, _, srv := serve(t, Options{})
	const d = 100 * time.Millisecond
	inj.SetLatency(d)
	start := time.Now()
	if resp, _, err := do(t, srv, "GET", "/b/k", nil); err != nil || resp.StatusCode != 200 {
		t.Fatal(err, resp)
	}
	// Only a lower bound: an upper bound would flake on a loaded machine.
	if el := time.Since(start); el < d {
		t.Errorf("request took %v, want at least %v", el, d)
	}
	if s := inj.Status(); s.Latency != d.String() {
		t.Errorf("status %+v", s)
	}
}

func TestConcurrentCount(t *testing.T) {
	inj, _, srv := serve(t, Options{})
	const faults, requests = 10, 60
	if err := inj.FailNext(Rule{Kind: InternalError, Count: faults}); err != nil {
		t.Fatal(err)
	}
	var failed atomic.Int32
	var wg sync.WaitGroup
	for range requests {
		wg.Go(func() {
			resp, _, err := do(t, srv, "GET", "/b/k", nil)
			if err != nil {
				t.Error(err)
				return
			}
			if resp.StatusCode == 500 {
				failed.Add(1)
			}
		})
	}
	for range 5 {
		wg.Go(func() { _ = inj.Status(); inj.SetLatency(0) })
	}
	wg.Wait()
	if failed.Load() != faults {
		t.Errorf("%d requests failed, want exactly %d", failed.Load(), faults)
	}
}

func TestApply(t *testing.T) {
	tests := []struct {
		name    string
		cmd     string
		wantErr bool
		check   func(Status) bool
	}{
		{"fail defaults to one", `{"action":"fail","kind":"slow-down","operation":"PutObject"}`, false,
			func(s Status) bool {
				return len(s.Rules) == 1 && s.Rules[0].Count == 1 && s.Rules[0].Operation == "PutObject"
			}},
		{"latency", `{"action":"latency","duration":"2s"}`, false, func(s Status) bool { return s.Latency == "2s" }},
		{"unavailable default kind", `{"action":"unavailable","duration":"1h"}`, false,
			func(s Status) bool { return s.UnavailableKind == ServiceUnavailable }},
		{"unknown action", `{"action":"explode"}`, true, nil},
		{"unknown kind", `{"action":"fail","kind":"boom"}`, true, nil},
		{"negative count", `{"action":"fail","kind":"reset","count":-1}`, true, nil},
		{"bad duration", `{"action":"latency","duration":"soon"}`, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inj := New(Options{})
			var c Command
			if err := json.Unmarshal([]byte(tt.cmd), &c); err != nil {
				t.Fatal(err)
			}
			err := inj.Apply(c)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Apply: %v, want error %v", err, tt.wantErr)
			}
			if tt.check != nil && !tt.check(inj.Status()) {
				t.Errorf("status %+v", inj.Status())
			}
			if err := inj.Apply(Command{Action: "clear"}); err != nil || len(inj.Status().Rules) != 0 || inj.Status().Latency != "0s" {
				t.Errorf("clear: %v %+v", err, inj.Status())
			}
		})
	}
}

func TestS3Classifier(t *testing.T) {
	tests := []struct {
		method, target, host, copySrc, want string
	}{
		{"GET", "/", "", "", "ListBuckets"},
		{"PUT", "/b", "", "", "CreateBucket"},
		{"HEAD", "/b/", "", "", "HeadBucket"},
		{"DELETE", "/b", "", "", "DeleteBucket"},
		{"GET", "/b?location", "", "", "GetBucketLocation"},
		{"GET", "/b?uploads", "", "", "ListMultipartUploads"},
		{"GET", "/b?list-type=2&prefix=a", "", "", "ListObjectsV2"},
		{"GET", "/b?prefix=a", "", "", "ListObjects"},
		{"POST", "/b?delete", "", "", "DeleteObjects"},
		{"GET", "/b/k", "", "", "GetObject"},
		{"HEAD", "/b/k", "", "", "HeadObject"},
		{"PUT", "/b/k", "", "", "PutObject"},
		{"PUT", "/b/k", "", "/b/src", "CopyObject"},
		{"PUT", "/b/k?partNumber=1&uploadId=u", "", "", "UploadPart"},
		{"PUT", "/b/k?partNumber=1&uploadId=u", "", "/b/src", "UploadPartCopy"},
		{"DELETE", "/b/k", "", "", "DeleteObject"},
		{"DELETE", "/b/k?uploadId=u", "", "", "AbortMultipartUpload"},
		{"POST", "/b/k?uploads", "", "", "CreateMultipartUpload"},
		{"POST", "/b/k?uploadId=u", "", "", "CompleteMultipartUpload"},
		{"GET", "/b/k?uploadId=u", "", "", "ListParts"},
		{"GET", "/k", "b.s3.example:8181", "", "GetObject"},
		{"GET", "/", "b.s3.example", "", "ListObjects"},
		{"GET", "/", "s3.example", "", "ListBuckets"},
	}
	classify := S3Classifier("s3.example")
	for _, tt := range tests {
		r := httptest.NewRequest(tt.method, tt.target, nil)
		if tt.host != "" {
			r.Host = tt.host
		}
		if tt.copySrc != "" {
			r.Header.Set("x-amz-copy-source", tt.copySrc)
		}
		if got := classify(r); got != tt.want {
			t.Errorf("%s %s (host %q): %q, want %q", tt.method, tt.target, tt.host, got, tt.want)
		}
	}
}
