package iam

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cosmount/cosmount/internal/filestamp"
)

// maxCRTokenFile bounds how much of the token file is read; projected
// service-account tokens are around 1-2 KiB.
const maxCRTokenFile = 64 << 10

// TrustedProfileOptions configures a TrustedProfileSource. Exactly one of
// TokenFile and TokenFunc, and exactly one field of Profile, must be set.
type TrustedProfileOptions struct {
	// Exchanger performs the grant, normally a *Client.
	Exchanger Exchanger
	// TokenFile holds the compute-resource token. It is re-read at every
	// exchange because the mounter (or kubelet) replaces it atomically when
	// the pod's token is renewed. Surrounding white space is trimmed.
	TokenFile string
	// TokenFunc returns the compute-resource token; called at every exchange.
	TokenFunc func(ctx context.Context) (string, error)
	Profile   Profile
	// Scope is optional.
	Scope string
}

// TrustedProfileSource exchanges a compute-resource token for a trusted
// profile's access token at every call. It does not cache: wrap it in a
// CachingSource.
type TrustedProfileSource struct {
	opts TrustedProfileOptions
}

// NewTrustedProfileSource validates opts and returns the source.
func NewTrustedProfileSource(opts TrustedProfileOptions) (*TrustedProfileSource, error) {
	if opts.Exchanger == nil {
		return nil, errors.New("iam: trusted profile source needs an exchanger")
	}
	if (opts.TokenFile == "") == (opts.TokenFunc == nil) {
		return nil, errors.New("iam: exactly one of compute-resource token file or token function must be set")
	}
	if err := opts.Profile.Validate(); err != nil {
		return nil, err
	}
	return &TrustedProfileSource{opts: opts}, nil
}

// Token reads the current compute-resource token and exchanges it.
func (s *TrustedProfileSource) Token(ctx context.Context) (Token, error) {
	crToken, err := s.crToken(ctx)
	if err != nil {
		return Token{}, err
	}
	resp, err := s.opts.Exchanger.ExchangeCRToken(ctx, CRTokenRequest{
		CRToken: crToken,
		Profile: s.opts.Profile,
		Scope:   s.opts.Scope,
	})
	if err != nil {
		return Token{}, err
	}
	return resp.Token(), nil
}

// LogValues describes the source for structured logs (CachingSource uses it).
func (s *TrustedProfileSource) LogValues() []any {
	return []any{"grant", "cr-token", "profile", s.opts.Profile.String()}
}

func (s *TrustedProfileSource) crToken(ctx context.Context) (string, error) {
	var raw string
	if s.opts.TokenFunc != nil {
		t, err := s.opts.TokenFunc(ctx)
		if err != nil {
			return "", fmt.Errorf("iam: getting compute-resource token: %w", err)
		}
		raw = t
	} else {
		t, err := readTokenFile(s.opts.TokenFile)
		if err != nil {
			return "", err
		}
		raw = t
	}
	t := strings.TrimSpace(raw)
	if t == "" {
		return "", errors.New("iam: compute-resource token is empty")
	}
	return t, nil
}

// readTokenFile opens the path afresh each time, so an atomic rename over it
// is always observed; the errors name the path, never the content.
func readTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("iam: reading compute-resource token: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCRTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("iam: reading compute-resource token %s: %w", path, err)
	}
	if len(data) > maxCRTokenFile {
		return "", fmt.Errorf("iam: compute-resource token file %s is larger than %d bytes", path, maxCRTokenFile)
	}
	return string(data), nil
}

// APIKeySource exchanges an API key at every call. It does not cache: wrap it
// in a CachingSource. Callers read the key from a file or the environment,
// never from the command line.
type APIKeySource struct {
	exchanger Exchanger
	apiKey    string
}

// NewAPIKeySource returns a source for apiKey; surrounding white space is trimmed.
func NewAPIKeySource(exchanger Exchanger, apiKey string) (*APIKeySource, error) {
	if exchanger == nil {
		return nil, errors.New("iam: API key source needs an exchanger")
	}
	apiKey = strings.TrimSpace(apiKey)
	if apiKey == "" {
		return nil, errors.New("iam: API key is empty")
	}
	return &APIKeySource{exchanger: exchanger, apiKey: apiKey}, nil
}

// Token exchanges the API key.
func (s *APIKeySource) Token(ctx context.Context) (Token, error) {
	resp, err := s.exchanger.ExchangeAPIKey(ctx, s.apiKey)
	if err != nil {
		return Token{}, err
	}
	return resp.Token(), nil
}

// LogValues describes the source for structured logs.
func (s *APIKeySource) LogValues() []any { return []any{"grant", "apikey"} }

// StaticSource hands out one fixed token until it expires: for tests and for
// callers that obtained a token elsewhere.
type StaticSource struct {
	tok Token
	now func() time.Time
}

// NewStaticSource returns a source for tok; now may be nil (time.Now).
func NewStaticSource(tok Token, now func() time.Time) *StaticSource {
	if now == nil {
		now = time.Now
	}
	return &StaticSource{tok: tok, now: now}
}

// Token returns the fixed token, or an error once it is empty or expired.
func (s *StaticSource) Token(ctx context.Context) (Token, error) {
	if err := ctx.Err(); err != nil {
		return Token{}, err
	}
	if !s.tok.Valid(s.now()) {
		return Token{}, &Error{kind: ErrBadCredentials, ErrorMessage: "static token is empty or expired"}
	}
	return s.tok, nil
}

// maxAPIKeyFile bounds how much of an API key file is read; keys are 44
// characters.
const maxAPIKeyFile = 4 << 10

// ChangeReporter is implemented by sources whose credential can be replaced
// while they are in use (a key file that the node plugin rewrites). A
// CachingSource asks before every cached hand-out and, when it reports a
// change, forgets its token so that the next request carries one of the new
// credential.
type ChangeReporter interface {
	CredentialsChanged() bool
}

// APIKeyFileSource exchanges the API key held in a file, read afresh at
// every exchange, so that a key the node plugin rotated (by renaming a new
// file over the old one) is used from the next exchange on. It does not
// cache: wrap it in a CachingSource, which asks CredentialsChanged before
// it hands out a cached token.
type APIKeyFileSource struct {
	exchanger Exchanger
	path      string

	mu    sync.Mutex
	stamp filestamp.Stamp // guarded by mu: the file version sum was read from
	sum   [32]byte        // guarded by mu: SHA-256 of the key last exchanged (not the key)
}

var _ ChangeReporter = (*APIKeyFileSource)(nil)

// NewAPIKeyFileSource checks that path holds a key and returns the source.
func NewAPIKeyFileSource(exchanger Exchanger, path string) (*APIKeyFileSource, error) {
	if exchanger == nil {
		return nil, errors.New("iam: API key source needs an exchanger")
	}
	s := &APIKeyFileSource{exchanger: exchanger, path: path}
	if _, _, err := s.read(); err != nil {
		return nil, err
	}
	return s, nil
}

// read returns the key and the version of the file it came from; errors
// name the file, never its content.
func (s *APIKeyFileSource) read() (string, filestamp.Stamp, error) {
	st, err := filestamp.Of(s.path)
	if err != nil {
		return "", filestamp.Stamp{}, fmt.Errorf("iam: API key file: %w", err)
	}
	f, err := os.Open(s.path)
	if err != nil {
		return "", filestamp.Stamp{}, fmt.Errorf("iam: API key file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxAPIKeyFile+1))
	if err != nil {
		return "", filestamp.Stamp{}, fmt.Errorf("iam: API key file %s: %w", s.path, err)
	}
	if len(b) > maxAPIKeyFile {
		return "", filestamp.Stamp{}, fmt.Errorf("iam: API key file %s is larger than %d bytes", s.path, maxAPIKeyFile)
	}
	key := strings.TrimSpace(string(b))
	if key == "" {
		return "", filestamp.Stamp{}, fmt.Errorf("iam: API key file %s is empty", s.path)
	}
	return key, st, nil
}

// Token reads the key and exchanges it.
func (s *APIKeyFileSource) Token(ctx context.Context) (Token, error) {
	key, st, err := s.read()
	if err != nil {
		return Token{}, err
	}
	resp, err := s.exchanger.ExchangeAPIKey(ctx, key)
	if err != nil {
		return Token{}, err
	}
	s.mu.Lock()
	s.stamp, s.sum = st, sha256.Sum256([]byte(key))
	s.mu.Unlock()
	return resp.Token(), nil
}

// CredentialsChanged reports whether the file now holds another key than
// the one last exchanged (or last reported). It costs a stat; the file is read only when the
// stat shows a new version (a republish that writes the same key changes
// nothing). A missing or unreadable file is not a change: the cached token
// stays in use until it expires, and the exchange then reports the file.
func (s *APIKeyFileSource) CredentialsChanged() bool {
	st, err := filestamp.Of(s.path)
	if err != nil {
		return false
	}
	s.mu.Lock()
	same := st == s.stamp || s.stamp == (filestamp.Stamp{})
	s.mu.Unlock()
	if same {
		return false
	}
	key, st, err := s.read()
	if err != nil {
		return false
	}
	sum := sha256.Sum256([]byte(key))
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := sum != s.sum
	// Each new version is reported once: if the new key cannot be
	// exchanged, callers get that error, not a cache emptied again and
	// again.
	s.stamp, s.sum = st, sum
	return changed
}

// LogValues describes the source for structured logs.
func (s *APIKeyFileSource) LogValues() []any { return []any{"grant", "apikey", "keyFile", s.path} }
