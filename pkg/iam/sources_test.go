package iam

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeAtomic replaces path the way the mounter and kubelet do: write a
// temporary file in the same directory, then rename it over the old one.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func formOf(t *testing.T, r recorded) url.Values {
	t.Helper()
	v, err := url.ParseQuery(r.body)
	if err != nil {
		t.Fatalf("parsing request body: %v", err)
	}
	return v
}

func TestTrustedProfileSourceRereadsTokenFile(t *testing.T) {
	srv := newRawServer(t, okHandler(okBody))
	client := newTestClient(t, ClientOptions{BaseURL: srv.URL})
	path := filepath.Join(t.TempDir(), "token")
	src, err := NewTrustedProfileSource(TrustedProfileOptions{Exchanger: client, TokenFile: path, Profile: Profile{ID: "Profile-abc"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	if _, err := src.Token(ctx); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("missing token file: err = %v, want an error naming the path", err)
	}
	// Surrounding white space and the trailing newline kubelet writes are trimmed.
	contents := []string{"first.jwt.token\n", "  second.jwt.token\r\n", "third.jwt.token"}
	for _, c := range contents {
		writeAtomic(t, path, c)
		tok, err := src.Token(ctx)
		if err != nil {
			t.Fatalf("Token: %v", err)
		}
		if tok.AccessToken != testAccessToken || !tok.Expiry.Equal(time.Unix(1893456000, 0)) {
			t.Errorf("unexpected token %+v", tok.Expiry)
		}
	}
	reqs := srv.requests()
	if len(reqs) != len(contents) {
		t.Fatalf("server saw %d exchanges, want %d", len(reqs), len(contents))
	}
	for i, r := range reqs {
		f := formOf(t, r)
		if got, want := f.Get("cr_token"), strings.TrimSpace(contents[i]); got != want {
			t.Errorf("exchange %d sent cr_token %q, want %q", i, got, want)
		}
		if f.Get("profile_id") != "Profile-abc" || f.Get("grant_type") != GrantCRToken {
			t.Errorf("exchange %d sent form %v", i, f)
		}
	}

	writeAtomic(t, path, " \n")
	if _, err := src.Token(ctx); err == nil {
		t.Errorf("blank token file accepted")
	}
	if len(srv.requests()) != len(contents) {
		t.Errorf("a blank token was sent to IAM")
	}
}

func TestTrustedProfileSourceTokenFuncAndErrors(t *testing.T) {
	srv := newRawServer(t, iamError(400, "BXNIM0398E", "Selected trusted profile not eligible.", "c1:ns:sa:pod", "r1"))
	client := newTestClient(t, ClientOptions{BaseURL: srv.URL})
	calls := 0
	src, err := NewTrustedProfileSource(TrustedProfileOptions{
		Exchanger: client,
		TokenFunc: func(context.Context) (string, error) { calls++; return testCRToken + "\n", nil },
		Profile:   Profile{Name: "cosmount-reader"},
		Scope:     "ibm openid",
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Token(context.Background())
	if !errors.Is(err, ErrNotEligible) || !strings.Contains(err.Error(), "c1:ns:sa:pod") {
		t.Fatalf("err = %v, want not eligible naming the identifier", err)
	}
	assertNoSecrets(t, err)
	f := formOf(t, srv.requests()[0])
	if calls != 1 || f.Get("cr_token") != testCRToken || f.Get("profile_name") != "cosmount-reader" || f.Get("scope") != "ibm openid" {
		t.Errorf("calls=%d form=%v", calls, f.Get("profile_name"))
	}

	failing, err := NewTrustedProfileSource(TrustedProfileOptions{
		Exchanger: client,
		TokenFunc: func(context.Context) (string, error) { return "", errors.New("kubelet has not written it") },
		Profile:   Profile{ID: "p"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := failing.Token(context.Background()); err == nil || !strings.Contains(err.Error(), "kubelet has not written it") {
		t.Errorf("TokenFunc error not propagated: %v", err)
	}
}

func TestTrustedProfileOptionsValidation(t *testing.T) {
	client := newTestClient(t, ClientOptions{})
	fn := func(context.Context) (string, error) { return "x", nil }
	tests := []struct {
		name string
		opts TrustedProfileOptions
		ok   bool
	}{
		{"file and id", TrustedProfileOptions{Exchanger: client, TokenFile: "/t", Profile: Profile{ID: "p"}}, true},
		{"func and crn", TrustedProfileOptions{Exchanger: client, TokenFunc: fn, Profile: Profile{CRN: "crn:x"}}, true},
		{"no exchanger", TrustedProfileOptions{TokenFile: "/t", Profile: Profile{ID: "p"}}, false},
		{"no token", TrustedProfileOptions{Exchanger: client, Profile: Profile{ID: "p"}}, false},
		{"file and func", TrustedProfileOptions{Exchanger: client, TokenFile: "/t", TokenFunc: fn, Profile: Profile{ID: "p"}}, false},
		{"no profile", TrustedProfileOptions{Exchanger: client, TokenFile: "/t"}, false},
		{"id and name", TrustedProfileOptions{Exchanger: client, TokenFile: "/t", Profile: Profile{ID: "p", Name: "n"}}, false},
		{"all three", TrustedProfileOptions{Exchanger: client, TokenFile: "/t", Profile: Profile{ID: "p", Name: "n", CRN: "c"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewTrustedProfileSource(tt.opts)
			if (err == nil) != tt.ok {
				t.Errorf("err = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestAPIKeySource(t *testing.T) {
	srv := newRawServer(t, okHandler(okBody))
	client := newTestClient(t, ClientOptions{BaseURL: srv.URL})
	if _, err := NewAPIKeySource(client, " \n"); err == nil {
		t.Errorf("blank API key accepted")
	}
	src, err := NewAPIKeySource(client, testAPIKey+"\n")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := src.Token(context.Background())
	if err != nil || tok.AccessToken != testAccessToken {
		t.Fatalf("Token: %v", err)
	}
	f := formOf(t, srv.requests()[0])
	if f.Get("apikey") != testAPIKey || f.Get("grant_type") != GrantAPIKey || f.Get("response_type") != "cloud_iam" {
		t.Errorf("unexpected apikey form (grant %q)", f.Get("grant_type"))
	}
}

func TestStaticSource(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	src := NewStaticSource(Token{AccessToken: "static", Expiry: now.Add(time.Minute)}, clock)
	if tok, err := src.Token(context.Background()); err != nil || tok.AccessToken != "static" {
		t.Fatalf("Token = %v, %v", tok.AccessToken, err)
	}
	now = now.Add(time.Minute)
	if _, err := src.Token(context.Background()); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("expired static token: err = %v", err)
	}
}
