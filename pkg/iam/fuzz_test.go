package iam

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

const fuzzSecret = "s3cr3t-api-key-value"

// FuzzParseError: IAM error bodies (JSON or anything a proxy sends). The
// result always has a kind, never contains the secret the request carried
// or a JWT, and stays short.
func FuzzParseError(f *testing.F) {
	f.Add(400, []byte(`{"errorCode":"BXNIM0415E","errorMessage":"Provided API key could not be found.","context":{"requestId":"r-1"}}`), "")
	f.Add(400, []byte(`{"errorCode":"BXNIM0398E","errorMessage":"not eligible","errorDetails":"c:ns:sa:pod"}`), "")
	f.Add(503, []byte("<html>upstream "+fuzzSecret+" failed</html>"), "3")
	f.Add(429, []byte(`{"errorMessage":"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"}`), "soon")
	f.Add(418, []byte("\x00\xff\xfe"), "-1")
	f.Fuzz(func(t *testing.T, status int, body []byte, retryAfter string) {
		if status < 100 || status > 999 {
			return
		}
		resp := &http.Response{StatusCode: status, Header: http.Header{"Retry-After": {retryAfter}}}
		e := parseError(resp, body, []string{fuzzSecret})
		if e.Kind() == nil {
			t.Fatal("error without a kind")
		}
		text := e.Error()
		if strings.Contains(text, fuzzSecret) {
			t.Fatalf("error text contains the secret: %q", text)
		}
		for _, field := range []string{e.ErrorMessage, e.ErrorDetails, e.ErrorCode, e.RequestID} {
			if jwtPattern.MatchString(field) {
				t.Fatalf("error field %q contains a JWT", field)
			}
		}
		if len(e.ErrorMessage) > maxErrorText+3 || len(e.ErrorDetails) > maxErrorText+3 {
			t.Fatalf("error text not bounded: %d", len(text))
		}
		if e.RetryAfter < 0 {
			t.Fatalf("negative Retry-After %v from %q", e.RetryAfter, retryAfter)
		}
	})
}

var successErr = regexp.MustCompile(`^iam: token exchange failed \(unexpected response\): HTTP 200: ` +
	`(response carries no access_token|response carries neither expiration nor expires_in|` +
	`response body is not a token response: (invalid JSON|invalid JSON at offset \d+|field "[a-z_]*" has JSON type [a-z]+( [-+.eE0-9]+)?))$`)

// FuzzParseSuccess: a 200 token response. It is either a token with an
// expiry or an ErrUnexpected error that does not quote the body.
func FuzzParseSuccess(f *testing.F) {
	f.Add([]byte(`{"access_token":"eyJa.eyJb.c","refresh_token":"not_supported","token_type":"Bearer","expires_in":3600,"expiration":1893456000}`))
	f.Add([]byte(`{"access_token":"tok","expires_in":60}`))
	f.Add([]byte(`{"access_token":"tok"}`))
	f.Add([]byte(`{"access_token":123}`))
	f.Add([]byte(`not json "with quoted-token-text"`))
	f.Add([]byte(`{"access_token":"tok","expiration":-1,"expires_in":-5}`))
	c := &Client{now: func() time.Time { return time.Unix(1_700_000_000, 0) }}
	f.Fuzz(func(t *testing.T, body []byte) {
		resp := &http.Response{StatusCode: 200, Header: http.Header{}}
		tr, err := c.parseSuccess(resp, body)
		if err != nil {
			// One of the fixed forms: nothing of the body but a field name
			// and a JSON type (or number) can be in it.
			if tr != nil || !successErr.MatchString(err.Error()) {
				t.Fatalf("failure %q with result %v", err, tr)
			}
			return
		}
		if tr.AccessToken == "" || tr.Expiry.IsZero() {
			t.Fatalf("accepted %q without a token or expiry: %+v", body, tr)
		}
	})
}

// FuzzSanitize: text from IAM responses is made safe for logs.
func FuzzSanitize(f *testing.F) {
	f.Add("plain text", 20)
	f.Add("tab\tand\nnewline "+fuzzSecret, 256)
	f.Add("éèà multi-byte runes cut in the middle", 5)
	f.Fuzz(func(t *testing.T, text string, max int) {
		if max < 1 || max > 1<<16 {
			return
		}
		out := sanitize(text, []string{fuzzSecret}, max)
		if strings.Contains(out, fuzzSecret) || len(out) > max+3 {
			t.Fatalf("sanitize(%q, %d) = %q", text, max, out)
		}
		for _, r := range out {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("control character in %q", out)
			}
		}
	})
}
