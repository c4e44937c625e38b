package cosserver

import (
	"bytes"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/cosmount/cosmount/pkg/emulator/audit"
	"github.com/cosmount/cosmount/pkg/emulator/config"
)

// newProxyEnv puts a backend-mode Server in front of the env's server, which
// acts as the external S3 backend (HMAC only: it has no Verifier).
func newProxyEnv(t *testing.T) (front *env, backendLog *audit.Log) {
	t.Helper()
	back := newEnv(t)
	back.srv.verifier = nil
	backendLog = audit.NewLog(nil, 0)
	bs := httptest.NewServer(backendLog.Middleware("cos", back.srv))
	t.Cleanup(bs.Close)
	u, err := url.Parse(bs.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	srv, err := New(Options{Verifier: fakeVerifier{}, Config: func() *config.Config { return cfg },
		Backend: &Backend{URL: u, AccessKeyID: testKeyID, SecretAccessKey: testSecret, Region: "us-south"}})
	if err != nil {
		t.Fatal(err)
	}
	fs := httptest.NewServer(srv)
	t.Cleanup(fs.Close)
	return &env{t: t, srv: srv, store: back.store, url: fs.URL}, backendLog
}

func TestBackendProxy(t *testing.T) {
	front, log := newProxyEnv(t)
	// Bearer in front, SigV4 toward the backend.
	expect(t, "bearer put", front.bearer(tokWriter, "PUT", "/bkt/dir/a%20b", []byte("through the proxy"), "x-amz-meta-mode", "7"), 200, "")
	g := front.bearer(tokReader, "GET", "/bkt/dir/a%20b", nil, "Range", "bytes=4-6")
	if g.status != 206 || string(g.body) != "ugh" || g.header.Get("X-Amz-Meta-Mode") != "7" {
		t.Errorf("ranged get through proxy: %d %q %v", g.status, g.body, g.header)
	}
	if id := g.header.Values("X-Amz-Request-Id"); len(id) != 1 || g.header.Get("X-Clv-Request-Id") != id[0] {
		t.Errorf("request ids %v / %v", id, g.header.Values("X-Clv-Request-Id"))
	}
	ents := log.Entries()
	last := ents[len(ents)-1]
	if last.AuthScheme != "sigv4" || last.PrincipalID != testKeyID || last.Operation != "GetObject" || last.Key != "dir/a b" {
		t.Errorf("backend saw %+v", last)
	}
	// Denials happen in front; the backend never hears of them.
	n := log.Len()
	expect(t, "reader put denied", front.bearer(tokReader, "PUT", "/bkt/x", []byte("x")), 403, "AccessDenied")
	expect(t, "bad token", front.bearer("forged", "GET", "/bkt/x", nil), 403, "AccessDenied")
	expect(t, "bad location", front.bearer(tokManager, "PUT", "/newb", []byte(`<CreateBucketConfiguration><LocationConstraint>eu-de-standard</LocationConstraint></CreateBucketConfiguration>`),
		"ibm-service-instance-id", testInstance), 400, "InvalidLocationConstraint")
	if log.Len() != n {
		t.Errorf("denied requests reached the backend: %+v", log.Since(n))
	}
	// Backend errors pass through.
	miss := front.bearer(tokReader, "GET", "/bkt/missing", nil)
	expect(t, "missing key", miss, 404, "NoSuchKey")
	if want := `<Resource>/bkt/missing</Resource><RequestId>` + miss.header.Get("X-Amz-Request-Id") + `</RequestId><httpStatusCode>404</httpStatusCode></Error>`; !strings.HasSuffix(string(miss.body), want) {
		t.Errorf("backend error not in IBM form with the front's id: %s", miss.body)
	}
	expect(t, "missing key head", front.bearer(tokReader, "HEAD", "/bkt/missing", nil), 404, "")
	expect(t, "create bucket", front.bearer(tokManager, "PUT", "/newb", []byte(`<CreateBucketConfiguration><LocationConstraint>us-south-cold</LocationConstraint></CreateBucketConfiguration>`),
		"ibm-service-instance-id", testInstance), 200, "")
	if b, err := front.store.GetBucket("newb"); err != nil || b.LocationConstraint != "us-south-cold" {
		t.Errorf("bucket created through the proxy: %+v %v", b, err)
	}
	// aws-chunked bodies are decoded before forwarding.
	chunks := [][]byte{bytes.Repeat([]byte("z"), 5000), []byte("end")}
	expect(t, "chunked through proxy", front.do(signedChunked(t, front, "chunked", chunks, false)), 200, "")
	if g := front.bearer(tokReader, "GET", "/bkt/chunked", nil); string(g.body) != string(bytes.Join(chunks, nil)) {
		t.Errorf("chunked upload through proxy stored %d bytes", len(g.body))
	}
}

func TestBackendProxyWithSDK(t *testing.T) {
	front, _ := newProxyEnv(t)
	sdkRoundTrip(t, front.url)
}
