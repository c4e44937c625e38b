package cosserver

import (
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/cosmount/cosmount/pkg/emulator/audit"
	"github.com/cosmount/cosmount/pkg/emulator/config"
)

func TestNewValidatesOptions(t *testing.T) {
	cfg := func() *config.Config { return testConfig() }
	tests := []struct {
		name string
		opts Options
	}{
		{"no config", Options{Storage: &nopStorage{}}},
		{"no storage nor backend", Options{Config: cfg}},
		{"backend without url", Options{Config: cfg, Backend: &Backend{AccessKeyID: "a", SecretAccessKey: "b"}}},
	}
	for _, tc := range tests {
		if _, err := New(tc.opts); err == nil {
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
}

// nopStorage only exists to satisfy Options.Storage in option validation.
type nopStorage struct{ Storage }

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	e.put("obj", []byte("data"))
	past := time.Now().Add(-time.Hour)
	tests := []struct {
		name   string
		mk     func() *http.Request
		status int
		code   string
	}{
		{"no auth", func() *http.Request { return e.req("GET", "/bkt/obj", nil) }, 403, "AccessDenied"},
		{"bearer ok", func() *http.Request {
			return e.req("GET", "/bkt/obj", nil, "Authorization", "Bearer "+tokReader)
		}, 200, ""},
		{"lowercase bearer ok", func() *http.Request {
			return e.req("GET", "/bkt/obj", nil, "Authorization", "bearer "+tokReader)
		}, 200, ""},
		{"unknown token", func() *http.Request {
			return e.req("GET", "/bkt/obj", nil, "Authorization", "Bearer forged")
		}, 403, "AccessDenied"},
		{"expired token", func() *http.Request {
			return e.req("GET", "/bkt/obj", nil, "Authorization", "Bearer "+tokExpired)
		}, 403, "AccessDenied"},
		{"empty bearer", func() *http.Request {
			return e.req("GET", "/bkt/obj", nil, "Authorization", "Bearer ")
		}, 403, "AccessDenied"},
		{"basic auth", func() *http.Request {
			return e.req("GET", "/bkt/obj", nil, "Authorization", "Basic Yng6Yng=")
		}, 403, "AccessDenied"},
		{"sigv4 ok", func() *http.Request {
			r := e.req("GET", "/bkt/obj", nil)
			signV4(t, r, testKeyID, testSecret, hashHex(nil), time.Now())
			return r
		}, 200, ""},
		{"sigv4 unsigned payload", func() *http.Request {
			r := e.req("GET", "/bkt/obj", nil)
			signV4(t, r, testKeyID, testSecret, unsignedPayload, time.Now())
			return r
		}, 200, ""},
		{"sigv4 wrong secret", func() *http.Request {
			r := e.req("GET", "/bkt/obj", nil)
			signV4(t, r, testKeyID, "wrong", hashHex(nil), time.Now())
			return r
		}, 403, "SignatureDoesNotMatch"},
		{"sigv4 unknown key", func() *http.Request {
			r := e.req("GET", "/bkt/obj", nil)
			signV4(t, r, "nobody", testSecret, hashHex(nil), time.Now())
			return r
		}, 403, "InvalidAccessKeyId"},
		{"sigv4 stale", func() *http.Request {
			r := e.req("GET", "/bkt/obj", nil)
			signV4(t, r, testKeyID, testSecret, hashHex(nil), past)
			return r
		}, 403, "RequestTimeTooSkewed"},
		{"sigv4 tampered header", func() *http.Request {
			r := e.req("GET", "/bkt/obj", nil, "Range", "bytes=0-1")
			signV4(t, r, testKeyID, testSecret, hashHex(nil), time.Now())
			r.Header.Set("Range", "bytes=1-2")
			return r
		}, 403, "SignatureDoesNotMatch"},
		{"sigv4 tampered query", func() *http.Request {
			r := e.req("GET", "/bkt?prefix=a", nil)
			signV4(t, r, testKeyID, testSecret, hashHex(nil), time.Now())
			r.URL.RawQuery = "prefix=b"
			return r
		}, 403, "SignatureDoesNotMatch"},
		{"sigv4 body hash mismatch", func() *http.Request {
			r := e.req("PUT", "/bkt/new", []byte("actual"))
			signV4(t, r, testKeyID, testSecret, hashHex([]byte("claimed")), time.Now())
			return r
		}, 400, "XAmzContentSHA256Mismatch"},
		{"sigv4 missing content sha", func() *http.Request {
			r := e.req("GET", "/bkt/obj", nil)
			signV4(t, r, testKeyID, testSecret, hashHex(nil), time.Now())
			r.Header.Del("X-Amz-Content-Sha256")
			return r
		}, 400, "InvalidRequest"},
		{"presigned not supported", func() *http.Request {
			return e.req("GET", "/bkt/obj?X-Amz-Algorithm=AWS4-HMAC-SHA256", nil)
		}, 403, "AccessDenied"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { expect(t, tc.name, e.do(tc.mk()), tc.status, tc.code) })
	}
	// A body whose hash did not match must not have been stored.
	expect(t, "mismatched put not stored", e.bearer(tokManager, "HEAD", "/bkt/new", nil), 404, "")
}

func TestSigV4KeysWithSpecialCharacters(t *testing.T) {
	e := newEnv(t)
	for _, key := range []string{"dir/a b+c.txt", "ünï/çødé", "x%y&z=1", "tilde~star*(paren)", "dir//double", "trailing/"} {
		path := "/bkt/" + uriEncode(key, false)
		r := e.signed(testKeyID, testSecret, "PUT", path, []byte(key))
		expect(t, "put "+key, r, 200, "")
		r = e.signed(testKeyID, testSecret, "GET", path, nil)
		expect(t, "get "+key, r, 200, "")
		if string(r.body) != key {
			t.Errorf("get %q: body %q", key, r.body)
		}
	}
}

func TestErrorFormatAndRequestIDs(t *testing.T) {
	e := newEnv(t)
	r := e.bearer(tokManager, "GET", "/bkt/missing/key", nil)
	id := r.header.Get("X-Amz-Request-Id")
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(id) {
		t.Fatalf("request id %q is not a uuid", id)
	}
	if r.header.Get("X-Clv-Request-Id") != id {
		t.Errorf("X-Clv-Request-Id %q != x-amz-request-id %q", r.header.Get("X-Clv-Request-Id"), id)
	}
	want := `<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Resource>/bkt/missing/key</Resource><RequestId>` +
		id + `</RequestId><httpStatusCode>404</httpStatusCode></Error>`
	if string(r.body) != want {
		t.Errorf("error body\n got %s\nwant %s", r.body, want)
	}
	if r.header.Get("Content-Type") != "application/xml" {
		t.Errorf("content type %q", r.header.Get("Content-Type"))
	}
	h := e.bearer(tokManager, "HEAD", "/bkt/missing", nil)
	if h.status != 404 || len(h.body) != 0 || h.header.Get("X-Amz-Request-Id") == "" {
		t.Errorf("HEAD missing: %d, body %q, id %q", h.status, h.body, h.header.Get("X-Amz-Request-Id"))
	}
	ok := e.bearer(tokManager, "HEAD", "/bkt", nil)
	if okID := ok.header.Get("X-Amz-Request-Id"); ok.status != 200 || okID == id || okID == "" || ok.header.Get("X-Clv-Request-Id") != okID {
		t.Errorf("HEAD bucket: %d, ids %q %q (previous %q)", ok.status, okID, ok.header.Get("X-Clv-Request-Id"), id)
	}
	d := e.bearer(tokReader, "HEAD", "/bkt/x", nil)
	if d.status != 404 || len(d.body) != 0 {
		t.Errorf("HEAD as reader: %d %q", d.status, d.body)
	}
	m := e.bearer(tokManager, "PATCH", "/bkt/x", nil)
	expect(t, "PATCH", m, 405, "MethodNotAllowed")
	n := e.bearer(tokManager, "GET", "/bkt?acl", nil)
	expect(t, "GET ?acl", n, 501, "NotImplemented")
}

func TestPolicyPerRole(t *testing.T) {
	e := newEnv(t)
	e.put("obj", []byte("data"))
	inst := []string{"Ibm-Service-Instance-Id", testInstance}
	type call struct {
		name         string
		method, path string
		body         []byte
		hdr          []string
		okStatus     int
	}
	calls := []call{
		{"ListBuckets", "GET", "/", nil, inst, 200},
		{"HeadBucket", "HEAD", "/bkt", nil, nil, 200},
		{"ListObjects", "GET", "/bkt?list-type=2", nil, nil, 200},
		{"GetObject", "GET", "/bkt/obj", nil, nil, 200},
		{"PutObject", "PUT", "/bkt/new", []byte("x"), nil, 200},
		{"DeleteObject", "DELETE", "/bkt/gone", nil, nil, 204},
		{"CreateBucket", "PUT", "/newbucket", nil, inst, 200},
	}
	allowed := map[string]map[string]bool{
		tokManager:  {"ListBuckets": true, "HeadBucket": true, "ListObjects": true, "GetObject": true, "PutObject": true, "DeleteObject": true, "CreateBucket": true},
		tokWriter:   {"ListBuckets": true, "HeadBucket": true, "ListObjects": true, "GetObject": true, "PutObject": true, "DeleteObject": true},
		tokReader:   {"ListBuckets": true, "HeadBucket": true, "ListObjects": true, "GetObject": true},
		tokObjRead:  {"GetObject": true},
		tokObjWrite: {"PutObject": true},
		tokOther:    {"ListBuckets": false},
		tokBucket:   {"HeadBucket": true, "ListObjects": true, "GetObject": true, "PutObject": true, "DeleteObject": true},
	}
	for _, tok := range []string{tokReader, tokObjRead, tokObjWrite, tokWriter, tokOther, tokBucket, tokManager} {
		for _, c := range calls {
			r := e.bearer(tok, c.method, c.path, c.body, c.hdr...)
			if allowed[tok][c.name] {
				expect(t, tok+" "+c.name, r, c.okStatus, "")
			} else {
				expect(t, tok+" "+c.name, r, 403, "")
				if c.method != "HEAD" && errCode(t, r) != "AccessDenied" {
					t.Errorf("%s %s: code %s", tok, c.name, errCode(t, r))
				}
			}
		}
	}
	// HMAC keys carry their own policies.
	expect(t, "hmac reader get", e.signed(readerKeyID, readerSecret, "GET", "/bkt/obj", nil), 200, "")
	expect(t, "hmac reader put", e.signed(readerKeyID, readerSecret, "PUT", "/bkt/obj", []byte("x")), 403, "AccessDenied")
	// A denied caller cannot tell a missing bucket from a forbidden one.
	expect(t, "denied missing bucket", e.bearer(tokObjWrite, "GET", "/nosuch?list-type=2", nil), 403, "AccessDenied")
	expect(t, "allowed missing bucket", e.bearer(tokReader, "GET", "/nosuch?list-type=2", nil), 404, "NoSuchBucket")
}

func TestServiceInstanceHeader(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name, method, path, instance string
		status                       int
		code                         string
	}{
		{"list without header", "GET", "/", "", 400, "InvalidArgument"},
		{"list with unknown instance", "GET", "/", "11111111-1111-4111-8111-111111111111", 400, "InvalidArgument"},
		{"list with instance", "GET", "/", testInstance, 200, ""},
		{"create without header", "PUT", "/b-noheader", "", 400, "InvalidArgument"},
		{"create with unknown instance", "PUT", "/b-unknown", "bogus", 400, "InvalidArgument"},
		{"create with instance", "PUT", "/b-other", otherInstance, 200, ""},
	}
	for _, tc := range tests {
		var hdr []string
		if tc.instance != "" {
			hdr = []string{"ibm-service-instance-id", tc.instance}
		}
		expect(t, tc.name, e.bearer(tokManager, tc.method, tc.path, nil, hdr...), tc.status, tc.code)
	}
	// ListBuckets shows only the instance's buckets.
	r := e.bearer(tokManager, "GET", "/", nil, "ibm-service-instance-id", otherInstance)
	if !strings.Contains(string(r.body), "<Name>b-other</Name>") || strings.Contains(string(r.body), "<Name>bkt</Name>") {
		t.Errorf("other instance listing: %s", r.body)
	}
	r = e.bearer(tokManager, "GET", "/?extended", nil, "ibm-service-instance-id", testInstance)
	if !strings.Contains(string(r.body), "<Name>bkt</Name>") || !strings.Contains(string(r.body), "<LocationConstraint>us-south-standard</LocationConstraint>") {
		t.Errorf("extended listing: %s", r.body)
	}
	// HMAC credentials imply their instance.
	expect(t, "hmac list without header", e.signed(testKeyID, testSecret, "GET", "/", nil), 200, "")
	// A principal confined to another instance may not act on this one's buckets.
	expect(t, "other instance head", e.bearer(tokOther, "HEAD", "/bkt", nil), 403, "")
}

func TestCreateBucketLocationConstraint(t *testing.T) {
	e := newEnv(t)
	body := func(lc string) []byte {
		return []byte(`<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>` + lc + `</LocationConstraint></CreateBucketConfiguration>`)
	}
	tests := []struct {
		name   string
		bucket string
		body   []byte
		status int
		code   string
		want   string
	}{
		{"no body", "lc-none", nil, 200, "", "us-south-standard"},
		{"empty constraint", "lc-empty", body(""), 200, "", "us-south-standard"},
		{"smart", "lc-smart", body("us-south-smart"), 200, "", "us-south-smart"},
		{"vault", "lc-vault", body("us-south-vault"), 200, "", "us-south-vault"},
		{"cold", "lc-cold", body("us-south-cold"), 200, "", "us-south-cold"},
		{"onerate", "lc-onerate", body("us-south-onerate_active"), 200, "", "us-south-onerate_active"},
		{"bare location", "lc-bare", body("us-south"), 200, "", "us-south"},
		{"other location", "lc-eu", body("eu-de-standard"), 400, "InvalidLocationConstraint", ""},
		{"cross region elsewhere", "lc-us", body("us-standard"), 400, "InvalidLocationConstraint", ""},
		{"unknown class", "lc-gold", body("us-south-gold"), 400, "InvalidLocationConstraint", ""},
		{"malformed", "lc-bad", []byte("<CreateBucketConfiguration"), 400, "MalformedXML", ""},
		{"bad name", "Bad_Name", nil, 400, "InvalidBucketName", ""},
		{"exists", "bkt", nil, 409, "BucketAlreadyExists", ""},
	}
	for _, tc := range tests {
		r := e.bearer(tokManager, "PUT", "/"+tc.bucket, tc.body, "ibm-service-instance-id", testInstance)
		expect(t, tc.name, r, tc.status, tc.code)
		if tc.want == "" {
			continue
		}
		loc := e.bearer(tokManager, "GET", "/"+tc.bucket+"?location", nil)
		if !strings.Contains(string(loc.body), ">"+tc.want+"</LocationConstraint>") {
			t.Errorf("%s: location %s, want %s", tc.name, loc.body, tc.want)
		}
	}
}

func TestBucketLifecycle(t *testing.T) {
	e := newEnv(t)
	expect(t, "head missing", e.bearer(tokManager, "HEAD", "/nope", nil), 404, "")
	expect(t, "delete missing", e.bearer(tokManager, "DELETE", "/nope", nil), 404, "NoSuchBucket")
	e.put("k", []byte("v"))
	expect(t, "delete non-empty", e.bearer(tokManager, "DELETE", "/bkt", nil), 409, "BucketNotEmpty")
	expect(t, "delete object", e.bearer(tokManager, "DELETE", "/bkt/k", nil), 204, "")
	expect(t, "delete empty", e.bearer(tokManager, "DELETE", "/bkt", nil), 204, "")
	expect(t, "head deleted", e.bearer(tokManager, "HEAD", "/bkt", nil), 404, "")
}

func TestVirtualHostStyle(t *testing.T) {
	e := newEnv(t)
	r := e.req("PUT", "/dir/obj", []byte("vhost"))
	r.Host = "bkt.s3.test"
	r.Header.Set("Authorization", "Bearer "+tokManager)
	expect(t, "vhost put", e.do(r), 200, "")
	got := e.bearer(tokManager, "GET", "/bkt/dir/obj", nil)
	if string(got.body) != "vhost" {
		t.Fatalf("path-style read of vhost write: %d %q", got.status, got.body)
	}
	r = e.req("GET", "/?list-type=2", nil)
	r.Host = "bkt.s3.test:8080"
	signV4(t, r, testKeyID, testSecret, hashHex(nil), time.Now())
	l := e.do(r)
	if l.status != 200 || !strings.Contains(string(l.body), "<Key>dir/obj</Key>") {
		t.Errorf("vhost list: %d %s", l.status, l.body)
	}
}

func TestAuditRecord(t *testing.T) {
	e := newEnv(t)
	log := audit.NewLog(nil, 0)
	hs := httptest.NewServer(log.Middleware("cos", e.srv))
	t.Cleanup(hs.Close)
	e.url = hs.URL
	e.put("a/b", []byte("x"))
	e.signed(readerKeyID, readerSecret, "DELETE", "/bkt/a/b", nil)
	ents := log.Entries()
	if len(ents) != 2 {
		t.Fatalf("entries: %+v", ents)
	}
	p, d := ents[0], ents[1]
	if p.Operation != "PutObject" || p.Bucket != "bkt" || p.Key != "a/b" || p.PrincipalType != "profile" ||
		p.PrincipalID != "Profile-"+tokManager || p.AuthScheme != "bearer" || p.RequestID == "" || p.ErrorCode != "" {
		t.Errorf("put entry %+v", p)
	}
	if d.Operation != "DeleteObject" || d.PrincipalType != "hmac" || d.PrincipalID != readerKeyID || d.AuthScheme != "sigv4" ||
		d.ErrorCode != "AccessDenied" || d.Status != 403 {
		t.Errorf("delete entry %+v", d)
	}
}

func TestTokenExpiredMessages(t *testing.T) {
	e := newEnv(t)
	exp := e.bearer(tokExpired, "GET", "/bkt/x", nil)
	inv := e.bearer("forged", "GET", "/bkt/x", nil)
	var a, b s3Error
	if err := xml.Unmarshal(exp.body, &a); err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(inv.body, &b); err != nil {
		t.Fatal(err)
	}
	if a.Code != "AccessDenied" || b.Code != "AccessDenied" || !strings.Contains(a.Message, "expired") || strings.Contains(b.Message, "expired") {
		t.Errorf("expired: %+v; invalid: %+v", a, b)
	}
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{expiredErr{}, true},
		{fmt.Errorf("wrapped: %w", jwt.ErrTokenExpired), true},
		{errors.New("iamserver: access token expired"), true},
		{errors.New("iamserver: access token invalid: signature"), false},
	}
	for _, tc := range tests {
		if got := tokenExpired(tc.err); got != tc.want {
			t.Errorf("tokenExpired(%v) = %v", tc.err, got)
		}
	}
}
