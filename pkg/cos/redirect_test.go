package cos

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// A COS answer that redirects is never followed: the bearer token or the
// SigV4 signature would go to the host it names (net/http keeps
// Authorization when only the port differs, and a 307/308 re-sends the
// body).
func TestRedirectsAreNeverFollowed(t *testing.T) {
	var elsewhere atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
	}))
	defer target.Close()
	for _, code := range []int{301, 302, 303, 307, 308} {
		rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
			w.Header().Set("Location", target.URL+r.URL.Path)
			w.WriteHeader(code)
		})
		for _, hmac := range []bool{false, true} {
			c := testClient(t, rec, func(o *Options) {
				if hmac {
					o.Tokens, o.HMAC = nil, &HMAC{AccessKeyID: "AKID", SecretAccessKey: "secret"}
				}
			})
			_, err := c.PutObject(context.Background(), "bucket", "key", strings.NewReader("body"), 4, PutOptions{})
			if err == nil {
				t.Errorf("PUT answered %d (hmac %v): no error", code, hmac)
			}
			if err := c.HeadBucket(context.Background(), "bucket"); err == nil {
				t.Errorf("HEAD answered %d (hmac %v): no error", code, hmac)
			}
		}
	}
	if n := elsewhere.Load(); n != 0 {
		t.Fatalf("the redirect target got %d requests, want 0", n)
	}
}
