package iamserver

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/config"
	"github.com/cosmount/cosmount/pkg/emulator/satoken"
)

const (
	testIssuer     = "https://kubernetes.default.svc"
	testCluster    = "c1abc2def"
	testClusterCRN = "crn:v1:bluemix:public:containers-kubernetes:us-south:a/acct1:c1abc2def::"
)

// fakeClock is a settable time source shared by the server and the tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 3, 4, 5, 6, 7, 250_000_000, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Test keys are generated once: RSA generation is the slow part of these tests.
var (
	keysOnce              sync.Once
	issuerKey, otherKey   *satoken.Key
	rotatedKey, ecKey     *satoken.Key
	accessKey, accessKey2 *satoken.Key
)

func testKeys(t *testing.T) {
	t.Helper()
	keysOnce.Do(func() {
		gen := func(f func() (*satoken.Key, error)) *satoken.Key {
			k, err := f()
			if err != nil {
				panic(err)
			}
			return k
		}
		issuerKey, otherKey, rotatedKey = gen(satoken.GenerateKey), gen(satoken.GenerateKey), gen(satoken.GenerateKey)
		ecKey = gen(satoken.GenerateECDSAKey)
		accessKey, accessKey2 = gen(satoken.GenerateKey), gen(satoken.GenerateKey)
	})
}

// baseConfig trusts testIssuer (keys in a JWKS file holding issuerKey and ecKey).
func baseConfig(t *testing.T) *config.Config {
	t.Helper()
	testKeys(t)
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwks, satoken.MarshalJWKS(issuerKey.JWK(), ecKey.JWK()), 0o600); err != nil {
		t.Fatal(err)
	}
	return &config.Config{
		AccountID: "acct1",
		Issuers: []config.Issuer{{
			Cluster: testCluster, ClusterCRN: testClusterCRN, Issuer: testIssuer, JWKSFile: jwks,
			ResourceGroupID: "rg-0123", ResourceGroupName: "Default", Location: "us-south",
		}},
		Profiles: []config.Profile{
			{ID: "Profile-link", Name: "link-profile",
				Links:    []config.Link{{Cluster: testCluster, Namespace: "team-a", ServiceAccount: "writer"}},
				Policies: []config.Policy{{Role: config.RoleWriter, Bucket: "bucket-a"}}},
			{ID: "Profile-crn", Name: "crn-profile", CRN: "crn:v1:bluemix:public:iam-identity::a/acct1::profile:Profile-crn",
				Links: []config.Link{{CRType: "ROKS_SA", Cluster: testClusterCRN, Namespace: "team-b", ServiceAccount: "app"}}},
		},
		APIKeys: []config.APIKey{{ID: "ApiKey-1", Name: "ci", Key: "secret-api-key-1", Policies: []config.Policy{{Role: config.RoleReader}}}},
	}
}

type fixture struct {
	clock *fakeClock
	srv   *Server
	ts    *httptest.Server
}

func newFixture(t *testing.T, cfg *config.Config) *fixture {
	t.Helper()
	testKeys(t)
	clock := newFakeClock()
	srv, err := New(cfg, Options{Clock: clock.Now, SigningKey: accessKey, Host: "iam-test-host"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return &fixture{clock: clock, srv: srv, ts: ts}
}

// crToken mints a token for ns/sa/pod at the fixture's time, with edits.
func (f *fixture) crToken(t *testing.T, ns, sa, pod string, edit ...func(*satoken.Claims)) string {
	t.Helper()
	c := satoken.Claims{Issuer: testIssuer, Audience: []string{"iam"}, Namespace: ns, ServiceAccount: sa,
		ServiceAccountUID: "sa-uid", Pod: pod, PodUID: "pod-uid", IssuedAt: f.clock.Now().Add(-time.Minute), Lifetime: time.Hour}
	key := issuerKey
	for _, e := range edit {
		e(&c)
	}
	raw, err := key.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return m
}

// post sends a form to /identity/token like IBM's clients do.
func (f *fixture) post(t *testing.T, form url.Values, basic ...string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.ts.URL+TokenPath, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "iamserver-test/1.0")
	if len(basic) == 2 {
		req.SetBasicAuth(basic[0], basic[1])
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) reply {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

func crForm(token, profileID string) url.Values {
	return url.Values{"grant_type": {GrantCRToken}, "cr_token": {token}, "profile_id": {profileID}}
}

func httptestServer(t *testing.T, h http.Handler) string {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts.URL
}
