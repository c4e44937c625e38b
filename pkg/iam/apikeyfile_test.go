package iam

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// keyExchanger hands out a token named after the API key it was given, and
// refuses revoked keys like IAM does.
type keyExchanger struct {
	mu      sync.Mutex
	revoked map[string]bool
	seen    []string
}

func (k *keyExchanger) ExchangeCRToken(context.Context, CRTokenRequest) (*TokenResponse, error) {
	return nil, errors.New("not used")
}

func (k *keyExchanger) ExchangeAPIKey(_ context.Context, key string) (*TokenResponse, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.seen = append(k.seen, key)
	if k.revoked[key] {
		return nil, &Error{kind: ErrBadCredentials, StatusCode: 400, ErrorCode: "BXNIM0415E", ErrorMessage: "Provided API key could not be found."}
	}
	return &TokenResponse{AccessToken: "token-of-" + key, Expiry: time.Now().Add(time.Hour)}, nil
}

func (k *keyExchanger) exchanges() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.seen)
}

func TestAPIKeyFileSourceFollowsRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "apikey")
	ex := &keyExchanger{revoked: map[string]bool{}}
	if _, err := NewAPIKeyFileSource(ex, path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("missing file: %v, want an error naming it", err)
	}
	writeAtomic(t, path, "key-one\n")
	raw, err := NewAPIKeyFileSource(ex, path)
	if err != nil {
		t.Fatal(err)
	}
	src := NewCachingSource(raw, CachingOptions{})
	defer src.Close()
	ctx := context.Background()
	token := func() string {
		t.Helper()
		tok, err := src.Token(ctx)
		if err != nil {
			t.Fatalf("Token: %v", err)
		}
		return tok.AccessToken
	}
	if got := token(); got != "token-of-key-one" {
		t.Fatalf("first token %q", got)
	}
	for i := 0; i < 5; i++ {
		token()
	}
	if n := ex.exchanges(); n != 1 {
		t.Errorf("%d exchanges for cached tokens, want 1", n)
	}

	// A republish that writes the same key again changes nothing.
	writeAtomic(t, path, "key-one")
	if got := token(); got != "token-of-key-one" || ex.exchanges() != 1 {
		t.Errorf("same key rewritten: token %q after %d exchanges", got, ex.exchanges())
	}

	// Rotation: the new key is in the file, the old one revoked at once.
	// The very next request carries a token of the new key.
	writeAtomic(t, path, "key-two")
	ex.mu.Lock()
	ex.revoked["key-one"] = true
	ex.mu.Unlock()
	if got := token(); got != "token-of-key-two" {
		t.Errorf("after rotation: %q, want the new key's token", got)
	}
	if got := token(); got != "token-of-key-two" || ex.exchanges() != 2 {
		t.Errorf("after rotation: %q after %d exchanges, want 2", got, ex.exchanges())
	}

	// A missing file: the cached token stays valid until it expires.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if got := token(); got != "token-of-key-two" {
		t.Errorf("with the file gone the cached token was dropped: %q", got)
	}
	src.Invalidate()
	if _, err := src.Token(ctx); err == nil || !strings.Contains(err.Error(), "API key file") || Retryable(err) {
		t.Errorf("exchange without the file: %v, want a non-retryable error naming the file", err)
	}
}
