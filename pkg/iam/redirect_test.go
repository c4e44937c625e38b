package iam

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// An IAM answer that redirects is never followed: a 307 or 308 would make
// net/http post the pod's token or the API key again to the host it names.
func TestRedirectsAreNeverFollowed(t *testing.T) {
	var elsewhere atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
	}))
	defer target.Close()
	for _, code := range []int{301, 302, 303, 307, 308} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/identity/token", code)
		}))
		// A caller's own HTTP client does not bring redirects back either.
		for _, hc := range []*http.Client{nil, {}} {
			c, err := NewClient(ClientOptions{BaseURL: srv.URL, HTTPClient: hc})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.ExchangeCRToken(context.Background(), CRTokenRequest{CRToken: "pod-token-secret", Profile: Profile{Name: "p"}})
			if !errors.Is(err, ErrUnexpected) || !strings.Contains(err.Error(), "redirect") {
				t.Errorf("cr-token grant answered %d: %v, want an unexpected-answer error about the redirect", code, err)
			}
			if err != nil && strings.Contains(err.Error(), "pod-token-secret") {
				t.Errorf("error quotes the token: %v", err)
			}
			if _, err := c.ExchangeAPIKey(context.Background(), "api-key-secret"); !errors.Is(err, ErrUnexpected) {
				t.Errorf("apikey grant answered %d: %v", code, err)
			}
		}
		srv.Close()
	}
	if n := elsewhere.Load(); n != 0 {
		t.Fatalf("the redirect target got %d requests, want 0", n)
	}
}
