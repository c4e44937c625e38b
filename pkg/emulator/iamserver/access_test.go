package iamserver

import (
	"errors"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/cosmount/cosmount/pkg/emulator/config"
	"github.com/cosmount/cosmount/pkg/emulator/satoken"
)

var apiKeyForm = url.Values{"grant_type": {GrantAPIKey}, "apikey": {"secret-api-key-1"}}

func accessToken(t *testing.T, f *fixture, form url.Values) string {
	t.Helper()
	r := f.post(t, form)
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	return r.json(t)["access_token"].(string)
}

func TestVerifyAccessToken(t *testing.T) {
	f := newFixture(t, baseConfig(t))
	// A server with a different signing key but the same configuration.
	other, err := New(baseConfig(t), Options{Clock: f.clock.Now, SigningKey: accessKey2})
	if err != nil {
		t.Fatal(err)
	}
	tok := accessToken(t, f, apiKeyForm)
	parts := strings.Split(tok, ".")

	tests := []struct {
		name    string
		raw     string
		advance time.Duration
		srv     *Server
		wantErr error
	}{
		{name: "valid", raw: tok, srv: f.srv},
		{name: "valid just before expiry", raw: tok, advance: time.Hour - time.Second, srv: f.srv},
		{name: "expired", raw: tok, advance: time.Hour + time.Second, srv: f.srv, wantErr: ErrAccessTokenExpired},
		{name: "foreign signature", raw: tok, srv: other, wantErr: ErrAccessTokenInvalid},
		{name: "tampered payload", raw: parts[0] + "." + strings.TrimRight(parts[1], "=") + "x." + parts[2], srv: f.srv, wantErr: ErrAccessTokenInvalid},
		{name: "malformed", raw: "abc", srv: f.srv, wantErr: ErrAccessTokenInvalid},
		{name: "empty", raw: "", srv: f.srv, wantErr: ErrAccessTokenInvalid},
		{name: "CR token is not an access token", raw: f.crToken(t, "team-a", "writer", "p"), srv: f.srv, wantErr: ErrAccessTokenInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.clock.Advance(tt.advance)
			t.Cleanup(func() { f.clock.Advance(-tt.advance) })
			p, err := tt.srv.VerifyAccessToken(tt.raw)
			if tt.wantErr == nil {
				if err != nil || p.ID != "ApiKey-1" || p.Type != config.PrincipalAPIKey || len(p.Policies) != 1 {
					t.Fatalf("VerifyAccessToken = %+v, %v", p, err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || p != nil {
				t.Fatalf("VerifyAccessToken = %+v, %v; want %v", p, err, tt.wantErr)
			}
			other := ErrAccessTokenInvalid
			if tt.wantErr == ErrAccessTokenInvalid {
				other = ErrAccessTokenExpired
			}
			if errors.Is(err, other) {
				t.Errorf("error %v is both expired and invalid", err)
			}
			if len(tt.raw) > 20 && strings.Contains(err.Error(), tt.raw) {
				t.Error("error contains the token")
			}
		})
	}
}

func TestVerifyAccessTokenUsesCurrentConfig(t *testing.T) {
	f := newFixture(t, baseConfig(t))
	profTok := accessToken(t, f, crForm(f.crToken(t, "team-a", "writer", "p"), "Profile-link"))
	keyTok := accessToken(t, f, apiKeyForm)

	// Policies change with the configuration; a removed principal's tokens die.
	cfg := baseConfig(t)
	cfg.Profiles[0].Policies = []config.Policy{{Role: config.RoleManager}}
	cfg.APIKeys = nil
	if err := f.srv.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	p, err := f.srv.VerifyAccessToken(profTok)
	if err != nil || len(p.Policies) != 1 || p.Policies[0].Role != config.RoleManager || p.Name != "link-profile" {
		t.Fatalf("profile token after reload = %+v, %v", p, err)
	}
	if _, err := f.srv.VerifyAccessToken(keyTok); !errors.Is(err, ErrAccessTokenInvalid) {
		t.Errorf("token of a removed API key: %v", err)
	}
	// A token of another account (the account id changed) is not accepted.
	cfg = baseConfig(t)
	cfg.AccountID = "acct2"
	if err := f.srv.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := f.srv.VerifyAccessToken(profTok); !errors.Is(err, ErrAccessTokenInvalid) {
		t.Errorf("token of another account: %v", err)
	}
}

func TestAccessTokenLifetimeOneSecond(t *testing.T) {
	f := newFixture(t, baseConfig(t))
	f.srv.SetAccessTokenLifetime(time.Second)
	if got := f.srv.AccessTokenLifetime(); got != time.Second {
		t.Fatalf("AccessTokenLifetime = %v", got)
	}
	r := f.post(t, apiKeyForm)
	if r.status != http.StatusOK {
		t.Fatalf("status %d", r.status)
	}
	assertTokenBody(t, r, f.clock.Now(), time.Second)
	tok := r.json(t)["access_token"].(string)
	if _, err := f.srv.VerifyAccessToken(tok); err != nil {
		t.Fatalf("fresh 1s token: %v", err)
	}
	// The fake clock is at .250 s, so exp is the next whole second plus one:
	// still valid 1 s later, expired 2 s later.
	f.clock.Advance(time.Second)
	if _, err := f.srv.VerifyAccessToken(tok); err != nil {
		t.Fatalf("1s token after 1s: %v", err)
	}
	f.clock.Advance(time.Second)
	if _, err := f.srv.VerifyAccessToken(tok); !errors.Is(err, ErrAccessTokenExpired) {
		t.Fatalf("1s token after 2s: %v", err)
	}
	// Sub-second values are raised to the 1 s minimum.
	f.srv.SetAccessTokenLifetime(time.Millisecond)
	if got := f.srv.AccessTokenLifetime(); got != time.Second {
		t.Errorf("AccessTokenLifetime = %v", got)
	}
	// The configured lifetime is used by default.
	cfg := baseConfig(t)
	cfg.AccessTokenLifetime = config.Duration{Duration: 90 * time.Second}
	if err := f.srv.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	r = f.post(t, apiKeyForm)
	assertTokenBody(t, r, f.clock.Now(), 90*time.Second)
}

func TestAccessTokenClaims(t *testing.T) {
	f := newFixture(t, baseConfig(t))
	tok := accessToken(t, f, crForm(f.crToken(t, "team-a", "writer", "p"), "Profile-link"))
	c := jwt.MapClaims{}
	parsed, err := jwt.ParseWithClaims(tok, c, func(*jwt.Token) (any, error) { return accessKey.Public(), nil },
		jwt.WithTimeFunc(f.clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Header["alg"] != "RS256" || parsed.Header["kid"] != accessKey.KID {
		t.Errorf("header = %v", parsed.Header)
	}
	acct, _ := c["account"].(map[string]any)
	if c["iam_id"] != "Profile-link" || c["sub"] != "Profile-link" || c["principal_type"] != "profile" ||
		acct["bss"] != "acct1" || c["grant_type"] != GrantCRToken || c["iss"] != AccessTokenIssuer {
		t.Errorf("claims = %v", c)
	}
}

func TestKeysEndpointAndKeyFile(t *testing.T) {
	cfg := baseConfig(t)
	keyFile := filepath.Join(t.TempDir(), "iam-signing.pem")
	clock := newFakeClock()
	first, err := New(cfg, Options{Clock: clock.Now, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	url1 := httptestServer(t, first)
	req, _ := http.NewRequest(http.MethodPost, url1+TokenPath, strings.NewReader(apiKeyForm.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r := do(t, req)
	if r.status != http.StatusOK {
		t.Fatalf("status %d", r.status)
	}
	tok := r.json(t)["access_token"].(string)

	// /identity/keys publishes a key that verifies the token.
	keysReq, _ := http.NewRequest(http.MethodGet, url1+KeysPath, nil)
	kr := do(t, keysReq)
	if kr.status != http.StatusOK || kr.header.Get("Content-Type") != "application/json" {
		t.Fatalf("keys: %d %v", kr.status, kr.header)
	}
	pubs, err := satoken.ParseJWKS(kr.body)
	if err != nil || len(pubs) != 1 || pubs[0].Alg != "RS256" {
		t.Fatalf("keys = %+v, %v", pubs, err)
	}
	if _, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return pubs[0].Key, nil }, jwt.WithTimeFunc(clock.Now)); err != nil {
		t.Errorf("published key does not verify the token: %v", err)
	}
	postKeys, _ := http.NewRequest(http.MethodPost, url1+KeysPath, nil)
	if r := do(t, postKeys); r.status != http.StatusMethodNotAllowed || r.json(t)["errorCode"] != "BXNIM0060E" {
		t.Errorf("POST keys: %d %s", r.status, r.body)
	}
	notFound, _ := http.NewRequest(http.MethodGet, url1+"/identity/other", nil)
	if r := do(t, notFound); r.status != http.StatusNotFound {
		t.Errorf("unknown path: %d", r.status)
	}

	// A restarted server with the same key file accepts the old token.
	second, err := New(baseConfig(t), Options{Clock: clock.Now, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := second.VerifyAccessToken(tok); err != nil || p.ID != "ApiKey-1" {
		t.Errorf("restarted server: %+v, %v", p, err)
	}
	if string(second.JWKS()) != string(first.JWKS()) {
		t.Error("restarted server publishes another key")
	}
	// Without the key file, a new server does not.
	third, err := New(baseConfig(t), Options{Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := third.VerifyAccessToken(tok); !errors.Is(err, ErrAccessTokenInvalid) {
		t.Errorf("server with a fresh key: %v", err)
	}
	// An ECDSA signing key is refused: access tokens are RS256.
	if _, err := New(baseConfig(t), Options{SigningKey: ecKey}); err == nil {
		t.Error("New accepted an ES256 signing key")
	}
}
