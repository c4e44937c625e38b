package iamserver

import (
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/config"
	"github.com/cosmount/cosmount/pkg/emulator/satoken"
)

// fakeIssuer plays kube-apiserver's service-account issuer discovery.
type fakeIssuer struct {
	mu          sync.Mutex
	keys        []satoken.JWK
	jwksFetches int
	noDiscovery bool   // answer 404 to the discovery document
	foreignJWKS bool   // name jwks_uri under an unreachable in-cluster host
	bearer      string // when set, both documents require this bearer token
	failJWKS    bool   // answer 500 to the key set
	url         string
}

func newFakeIssuer(t *testing.T, keys ...*satoken.Key) *fakeIssuer {
	t.Helper()
	fi := &fakeIssuer{}
	fi.setKeys(keys...)
	fi.url = httptestServer(t, fi)
	return fi
}

func (fi *fakeIssuer) setKeys(keys ...*satoken.Key) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.keys = nil
	for _, k := range keys {
		fi.keys = append(fi.keys, k.JWK())
	}
}

func (fi *fakeIssuer) fetches() int {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	return fi.jwksFetches
}

func (fi *fakeIssuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	if fi.bearer != "" && r.Header.Get("Authorization") != "Bearer "+fi.bearer {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		if fi.noDiscovery {
			http.NotFound(w, r)
			return
		}
		jwksURI := fi.url + "/openid/v1/jwks"
		if fi.foreignJWKS {
			jwksURI = "https://kubernetes.default.svc.cluster.local/openid/v1/jwks"
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": fi.url, "jwks_uri": jwksURI,
			"response_types_supported": []string{"id_token"}, "id_token_signing_alg_values_supported": []string{"RS256", "ES256"}})
	case "/openid/v1/jwks":
		fi.jwksFetches++
		// Like kube-apiserver: the key set is served only as
		// application/jwk-set+json, anything else is 406 Not Acceptable.
		if !strings.Contains(r.Header.Get("Accept"), "application/jwk-set+json") {
			http.Error(w, "not acceptable", http.StatusNotAcceptable)
			return
		}
		if fi.failJWKS {
			http.Error(w, "etcd is down", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(satoken.MarshalJWKS(fi.keys...))
	default:
		http.NotFound(w, r)
	}
}

// discoveryConfig trusts fi (by discovery) besides the base config's issuer.
func discoveryConfig(t *testing.T, fi *fakeIssuer, edit func(*config.Issuer)) *config.Config {
	cfg := baseConfig(t)
	is := config.Issuer{Cluster: "c2", Issuer: fi.url, DiscoveryURL: fi.url}
	if edit != nil {
		edit(&is)
	}
	cfg.Issuers = append(cfg.Issuers, is)
	cfg.Profiles = append(cfg.Profiles, config.Profile{ID: "Profile-c2", Name: "c2-profile",
		Links: []config.Link{{Cluster: "c2", Namespace: "ns", ServiceAccount: "sa"}}})
	return cfg
}

func (f *fixture) exchangeFrom(t *testing.T, fi *fakeIssuer, key *satoken.Key) reply {
	t.Helper()
	raw, err := key.Mint(satoken.Claims{Issuer: fi.url, Audience: []string{"iam"}, Namespace: "ns", ServiceAccount: "sa",
		Pod: "pod", IssuedAt: f.clock.Now(), Lifetime: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return f.post(t, crForm(raw, "Profile-c2"))
}

func wantOutcome(t *testing.T, r reply, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d: %s", r.status, status, r.body)
	}
	if code != "" && r.json(t)["errorCode"] != code {
		t.Fatalf("body = %s, want %s", r.body, code)
	}
}

func TestDiscovery(t *testing.T) {
	tests := []struct {
		name  string
		ec    bool // the issuer signs with ES256
		setup func(t *testing.T, fi *fakeIssuer) func(*config.Issuer)
	}{
		{name: "jwks_uri on the discovery host", setup: func(*testing.T, *fakeIssuer) func(*config.Issuer) { return nil }},
		{name: "jwks_uri under the in-cluster name", setup: func(_ *testing.T, fi *fakeIssuer) func(*config.Issuer) {
			fi.foreignJWKS = true
			return nil
		}},
		{name: "no discovery document", setup: func(_ *testing.T, fi *fakeIssuer) func(*config.Issuer) {
			fi.noDiscovery = true
			return nil
		}},
		{name: "bearer token file", setup: func(t *testing.T, fi *fakeIssuer) func(*config.Issuer) {
			fi.bearer = "reviewer-token"
			file := filepath.Join(t.TempDir(), "token")
			if err := os.WriteFile(file, []byte("reviewer-token\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return func(is *config.Issuer) { is.DiscoveryBearerTokenFile = file }
		}},
		{name: "ES256 issuer", ec: true, setup: func(*testing.T, *fakeIssuer) func(*config.Issuer) { return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testKeys(t)
			key := issuerKey
			if tt.ec {
				key = ecKey
			}
			fi := newFakeIssuer(t, key)
			edit := tt.setup(t, fi)
			f := newFixture(t, discoveryConfig(t, fi, edit))
			wantOutcome(t, f.exchangeFrom(t, fi, key), http.StatusOK, "")
			wantOutcome(t, f.exchangeFrom(t, fi, key), http.StatusOK, "")
			if n := fi.fetches(); n != 1 {
				t.Errorf("key set fetched %d times, want 1 (cached)", n)
			}
			// A reload that keeps the issuer keeps its cached keys.
			if err := f.srv.SetConfig(discoveryConfig(t, fi, edit)); err != nil {
				t.Fatal(err)
			}
			wantOutcome(t, f.exchangeFrom(t, fi, key), http.StatusOK, "")
			if n := fi.fetches(); n != 1 {
				t.Errorf("key set fetched %d times after reload, want 1", n)
			}
		})
	}
}

func TestDiscoveryKeyRotation(t *testing.T) {
	testKeys(t)
	fi := newFakeIssuer(t, issuerKey)
	f := newFixture(t, discoveryConfig(t, fi, nil))
	wantOutcome(t, f.exchangeFrom(t, fi, issuerKey), http.StatusOK, "")

	// The cluster rotates its signing key. Right after a fetch, an unknown
	// kid does not trigger another one (rate limit).
	fi.setKeys(rotatedKey)
	wantOutcome(t, f.exchangeFrom(t, fi, rotatedKey), http.StatusBadRequest, CodeInvalidCRToken)
	if n := fi.fetches(); n != 1 {
		t.Fatalf("fetches = %d, want 1 (rate-limited)", n)
	}
	f.clock.Advance(DefaultJWKSRefetchInterval)
	wantOutcome(t, f.exchangeFrom(t, fi, rotatedKey), http.StatusOK, "")
	if n := fi.fetches(); n != 2 {
		t.Fatalf("fetches = %d, want 2 (refetch on unknown kid)", n)
	}
	// Tokens of the retired key are refused now.
	f.clock.Advance(DefaultJWKSRefetchInterval)
	wantOutcome(t, f.exchangeFrom(t, fi, issuerKey), http.StatusBadRequest, CodeInvalidCRToken)
	if n := fi.fetches(); n != 3 {
		t.Fatalf("fetches = %d, want 3", n)
	}
}

func TestDiscoveryIssuerDown(t *testing.T) {
	testKeys(t)
	fi := newFakeIssuer(t, issuerKey)
	fi.failJWKS = true
	f := newFixture(t, discoveryConfig(t, fi, nil))
	// The token may be fine: the emulator cannot tell, so it answers 503 for a retry.
	wantOutcome(t, f.exchangeFrom(t, fi, issuerKey), http.StatusServiceUnavailable, CodeUnavailable)
	fi.mu.Lock()
	fi.failJWKS = false
	fi.mu.Unlock()
	wantOutcome(t, f.exchangeFrom(t, fi, issuerKey), http.StatusOK, "")
}

func TestDiscoveryTLS(t *testing.T) {
	testKeys(t)
	fi := &fakeIssuer{}
	fi.setKeys(issuerKey)
	ts := httptest.NewTLSServer(fi)
	t.Cleanup(ts.Close)
	fi.url = ts.URL
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		edit       func(*config.Issuer)
		wantStatus int
	}{
		{name: "CA file", edit: func(is *config.Issuer) { is.DiscoveryCAFile = caFile }, wantStatus: http.StatusOK},
		{name: "insecure skip verify", edit: func(is *config.Issuer) { is.InsecureSkipTLSVerify = true }, wantStatus: http.StatusOK},
		{name: "unknown CA", edit: nil, wantStatus: http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, discoveryConfig(t, fi, tt.edit))
			wantOutcome(t, f.exchangeFrom(t, fi, issuerKey), tt.wantStatus, "")
		})
	}
	// A CA file without certificates is a configuration error.
	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("nothing"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(discoveryConfig(t, fi, func(is *config.Issuer) { is.DiscoveryCAFile = bad }), Options{SigningKey: accessKey}); err == nil {
		t.Error("New accepted a CA file without certificates")
	}
}
