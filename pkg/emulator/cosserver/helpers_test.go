package cosserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/cosmount/cosmount/pkg/emulator/config"
	"github.com/cosmount/cosmount/pkg/emulator/store"
)

const (
	testInstance  = "00000000-0000-4000-8000-000000000001"
	otherInstance = "00000000-0000-4000-8000-000000000002"
	testKeyID     = "test-access-key"
	testSecret    = "test-secret-key"
	readerKeyID   = "reader-access-key"
	readerSecret  = "reader-secret-key"
	testPartSize  = 1024 // store minimum part size in these tests
)

// Bearer tokens the fake verifier knows.
const (
	tokManager  = "tok-manager"
	tokReader   = "tok-reader"
	tokObjRead  = "tok-object-reader"
	tokObjWrite = "tok-object-writer"
	tokWriter   = "tok-writer"
	tokOther    = "tok-other-instance"
	tokBucket   = "tok-bucket-only"
	tokExpired  = "tok-expired"
	// tokTeamA is a Writer on bkt limited to team-a's prefix, in the form
	// IBM documents for fine-grained access.
	tokTeamA = "tok-team-a"
)

type expiredErr struct{}

func (expiredErr) Error() string { return "token expired" }
func (expiredErr) Expired() bool { return true }

// fakeVerifier maps fixed tokens to principals.
type fakeVerifier struct{}

func (fakeVerifier) VerifyAccessToken(raw string) (*config.Principal, error) {
	role := map[string]config.Policy{
		tokManager:  {Role: config.RoleManager},
		tokReader:   {Role: config.RoleReader, ServiceInstance: testInstance},
		tokObjRead:  {Role: config.RoleObjectReader},
		tokObjWrite: {Role: config.RoleObjectWriter},
		tokWriter:   {Role: config.RoleWriter},
		tokOther:    {Role: config.RoleManager, ServiceInstance: otherInstance},
		tokBucket:   {Role: config.RoleWriter, Bucket: "bkt"},
		tokTeamA: {Role: config.RoleWriter, Bucket: "bkt", Rule: &config.AccessRule{
			Path: "volumes/team-a/*", Prefix: "volumes/team-a/*", Delimiters: []string{"/", ""}, BucketActions: true}},
	}
	if raw == tokExpired {
		return nil, expiredErr{}
	}
	p, ok := role[raw]
	if !ok {
		return nil, errors.New("signature invalid")
	}
	return &config.Principal{Type: config.PrincipalProfile, ID: "Profile-" + raw, Policies: []config.Policy{p}}, nil
}

func testConfig() *config.Config {
	return &config.Config{
		Location:         "us-south",
		ServiceInstances: []config.ServiceInstance{{ID: testInstance}, {ID: otherInstance}},
		HMACKeys: []config.HMACKey{
			{AccessKeyID: testKeyID, SecretAccessKey: testSecret, ServiceInstance: testInstance,
				Policies: []config.Policy{{Role: config.RoleManager}}},
			{AccessKeyID: readerKeyID, SecretAccessKey: readerSecret, ServiceInstance: testInstance,
				Policies: []config.Policy{{Role: config.RoleReader}}},
		},
	}
}

type env struct {
	t     *testing.T
	srv   *Server
	store *store.Store
	url   string
	now   time.Time
}

// newEnv serves a Server over a fresh store on a loopback httptest server,
// with bucket "bkt" in testInstance.
func newEnv(t *testing.T) *env {
	t.Helper()
	st, err := store.OpenWithOptions(t.TempDir(), store.Options{MinPartSize: testPartSize, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	cfg := testConfig()
	e := &env{t: t, store: st}
	srv, err := New(Options{Storage: st, Verifier: fakeVerifier{}, Config: func() *config.Config { return cfg },
		Domain: "s3.test"})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	e.url = hs.URL
	if err := st.CreateBucket("bkt", "us-south-standard", testInstance); err != nil {
		t.Fatal(err)
	}
	return e
}

// req builds a request to path (with query) on the env's server.
func (e *env) req(method, path string, body []byte, hdr ...string) *http.Request {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	r, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	return r
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (e *env) do(r *http.Request) resp {
	e.t.Helper()
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// bearer sends a request with a bearer token.
func (e *env) bearer(tok, method, path string, body []byte, hdr ...string) resp {
	e.t.Helper()
	r := e.req(method, path, body, hdr...)
	r.Header.Set("Authorization", "Bearer "+tok)
	return e.do(r)
}

// signed sends a request signed with SigV4 (payload hash of the body).
func (e *env) signed(keyID, secret, method, path string, body []byte, hdr ...string) resp {
	e.t.Helper()
	r := e.req(method, path, body, hdr...)
	signV4(e.t, r, keyID, secret, hashHex(body), time.Now())
	return e.do(r)
}

func hashHex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func signV4(t *testing.T, r *http.Request, keyID, secret, payloadHash string, at time.Time) {
	t.Helper()
	r.Header.Set("X-Amz-Content-Sha256", payloadHash)
	err := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true }).SignHTTP(context.Background(),
		aws.Credentials{AccessKeyID: keyID, SecretAccessKey: secret}, r, payloadHash, "s3", "us-south", at)
	if err != nil {
		t.Fatal(err)
	}
}

// s3Error parses an error body.
type s3Error struct {
	Code           string `xml:"Code"`
	Message        string `xml:"Message"`
	Resource       string `xml:"Resource"`
	RequestID      string `xml:"RequestId"`
	HTTPStatusCode int    `xml:"httpStatusCode"`
}

func errCode(t *testing.T, r resp) string {
	t.Helper()
	if len(r.body) == 0 {
		return ""
	}
	var e s3Error
	if err := xml.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	return e.Code
}

// expect checks status and, for errors, the code.
func expect(t *testing.T, name string, r resp, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Errorf("%s: status %d, want %d (body %s)", name, r.status, status, trim(r.body))
		return
	}
	if code != "" {
		if got := errCode(t, r); got != code {
			t.Errorf("%s: code %q, want %q", name, got, code)
		}
	}
}

func trim(b []byte) string {
	s := string(b)
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return strings.TrimSpace(s)
}

// put stores an object through the API as the manager.
func (e *env) put(key string, body []byte, hdr ...string) resp {
	e.t.Helper()
	r := e.bearer(tokManager, http.MethodPut, "/bkt/"+key, body, hdr...)
	if r.status != http.StatusOK {
		e.t.Fatalf("put %s: %d %s", key, r.status, r.body)
	}
	return r
}
