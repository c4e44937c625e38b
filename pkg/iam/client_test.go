package iam

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Secrets used by the tests; error strings are asserted not to contain them.
const (
	testCRToken      = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJlLXNlY3JldA"
	testAPIKey       = "apikey-Zq8rT3vKx0secret"
	testClientSecret = "client-secret-Wq91"
	testAccessToken  = "eyJraWQiOiIyMDI2In0.eyJpYW1faWQiOiJpYW0tUHJvZmlsZSJ9.YWNjZXNzLXNpZw"
)

// recorded is what the raw test server saw.
type recorded struct {
	method, path, body string
	header             http.Header
}

// rawServer answers every request with handler after recording it.
type rawServer struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []recorded
}

func newRawServer(t *testing.T, handler http.HandlerFunc) *rawServer {
	t.Helper()
	s := &rawServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.reqs = append(s.reqs, recorded{method: r.Method, path: r.URL.Path, body: string(body), header: r.Header.Clone()})
		s.mu.Unlock()
		handler(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *rawServer) requests() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recorded(nil), s.reqs...)
}

func okHandler(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, body)
	}
}

const okBody = `{"access_token":"` + testAccessToken + `","refresh_token":"not_supported","ims_user_id":123,` +
	`"token_type":"Bearer","expires_in":3600,"expiration":1893456000,"scope":"ibm openid"}`

func newTestClient(t *testing.T, opts ClientOptions) *Client {
	t.Helper()
	c, err := NewClient(opts)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

func TestClientRequests(t *testing.T) {
	srv := newRawServer(t, okHandler(okBody))
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("cosmount:"+testClientSecret))

	tests := []struct {
		name     string
		base     string
		clientID string
		call     func(context.Context, *Client) (*TokenResponse, error)
		wantBody string
	}{
		{
			name: "cr-token by profile id, bare base",
			base: srv.URL,
			call: func(ctx context.Context, c *Client) (*TokenResponse, error) {
				return c.ExchangeCRToken(ctx, CRTokenRequest{CRToken: testCRToken, Profile: Profile{ID: "Profile-abc"}})
			},
			wantBody: "cr_token=" + testCRToken + "&grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Acr-token&profile_id=Profile-abc",
		},
		{
			name:     "cr-token by profile name with scope and client creds, trailing slash",
			base:     srv.URL + "/",
			clientID: "cosmount",
			call: func(ctx context.Context, c *Client) (*TokenResponse, error) {
				return c.ExchangeCRToken(ctx, CRTokenRequest{CRToken: testCRToken, Profile: Profile{Name: "my profile"}, Scope: "ibm openid"})
			},
			wantBody: "cr_token=" + testCRToken + "&grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Acr-token&profile_name=my+profile&scope=ibm+openid",
		},
		{
			name: "cr-token by profile crn, base with suffix",
			base: srv.URL + "/identity/token",
			call: func(ctx context.Context, c *Client) (*TokenResponse, error) {
				return c.ExchangeCRToken(ctx, CRTokenRequest{CRToken: testCRToken, Profile: Profile{CRN: "crn:v1:bluemix:public:iam-identity::a/acc::profile:Profile-abc"}})
			},
			wantBody: "cr_token=" + testCRToken + "&grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Acr-token&profile_crn=crn%3Av1%3Abluemix%3Apublic%3Aiam-identity%3A%3Aa%2Facc%3A%3Aprofile%3AProfile-abc",
		},
		{
			name: "apikey, base with suffix and slash",
			base: srv.URL + "/identity/token/",
			call: func(ctx context.Context, c *Client) (*TokenResponse, error) {
				return c.ExchangeAPIKey(ctx, testAPIKey)
			},
			wantBody: "apikey=" + testAPIKey + "&grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&response_type=cloud_iam",
		},
		{
			name:     "apikey with client creds",
			base:     srv.URL,
			clientID: "cosmount",
			call: func(ctx context.Context, c *Client) (*TokenResponse, error) {
				return c.ExchangeAPIKey(ctx, testAPIKey)
			},
			wantBody: "apikey=" + testAPIKey + "&grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&response_type=cloud_iam",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := ClientOptions{BaseURL: tt.base, Version: "1.2.3"}
			if tt.clientID != "" {
				opts.ClientID, opts.ClientSecret = tt.clientID, testClientSecret
			}
			c := newTestClient(t, opts)
			before := len(srv.requests())
			resp, err := tt.call(context.Background(), c)
			if err != nil {
				t.Fatalf("exchange: %v", err)
			}
			if resp.AccessToken != testAccessToken {
				t.Errorf("access token not returned")
			}
			reqs := srv.requests()
			if len(reqs) != before+1 {
				t.Fatalf("server saw %d requests, want 1", len(reqs)-before)
			}
			got := reqs[len(reqs)-1]
			if got.method != http.MethodPost || got.path != "/identity/token" {
				t.Errorf("request %s %s, want POST /identity/token", got.method, got.path)
			}
			if got.body != tt.wantBody {
				t.Errorf("body\n got %s\nwant %s", got.body, tt.wantBody)
			}
			wantHeaders := map[string]string{
				"Content-Type": "application/x-www-form-urlencoded",
				"Accept":       "application/json",
				"User-Agent":   "cosmount/1.2.3",
			}
			if tt.clientID != "" {
				wantHeaders["Authorization"] = basic
			}
			for k, v := range wantHeaders {
				if g := got.header.Get(k); g != v {
					t.Errorf("header %s = %q, want %q", k, g, v)
				}
			}
			if tt.clientID == "" {
				if _, ok := got.header["Authorization"]; ok {
					t.Errorf("Authorization header sent without client credentials")
				}
			}
		})
	}
}

func TestNewClientValidation(t *testing.T) {
	tests := []struct {
		name    string
		opts    ClientOptions
		wantURL string
		wantErr bool
	}{
		{name: "default", opts: ClientOptions{}, wantURL: "https://iam.cloud.ibm.com/identity/token"},
		{name: "private with slash", opts: ClientOptions{BaseURL: "https://private.iam.cloud.ibm.com/"}, wantURL: "https://private.iam.cloud.ibm.com/identity/token"},
		{name: "prefix path kept", opts: ClientOptions{BaseURL: "http://127.0.0.1:8080/iam"}, wantURL: "http://127.0.0.1:8080/iam/identity/token"},
		{name: "no scheme", opts: ClientOptions{BaseURL: "iam.cloud.ibm.com"}, wantErr: true},
		{name: "ftp", opts: ClientOptions{BaseURL: "ftp://iam.cloud.ibm.com"}, wantErr: true},
		{name: "query", opts: ClientOptions{BaseURL: "https://iam.cloud.ibm.com?x=1"}, wantErr: true},
		{name: "user info", opts: ClientOptions{BaseURL: "https://u:p@iam.cloud.ibm.com"}, wantErr: true},
		{name: "id without secret", opts: ClientOptions{ClientID: "bx"}, wantErr: true},
		{name: "secret without id", opts: ClientOptions{ClientSecret: "bx"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewClient(tt.opts)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("NewClient succeeded, want error")
				}
				if strings.Contains(err.Error(), ":p@") {
					t.Errorf("error leaks URL credentials: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewClient: %v", err)
			}
			if c.Endpoint() != tt.wantURL {
				t.Errorf("endpoint %q, want %q", c.Endpoint(), tt.wantURL)
			}
		})
	}
}

func TestExchangeRequestValidation(t *testing.T) {
	srv := newRawServer(t, okHandler(okBody))
	c := newTestClient(t, ClientOptions{BaseURL: srv.URL})
	ctx := context.Background()
	bad := []CRTokenRequest{
		{CRToken: testCRToken},
		{CRToken: testCRToken, Profile: Profile{ID: "a", Name: "b"}},
		{Profile: Profile{ID: "a"}},
	}
	for _, req := range bad {
		if _, err := c.ExchangeCRToken(ctx, req); err == nil {
			t.Errorf("ExchangeCRToken(%+v) succeeded, want error", req.Profile)
		}
	}
	if _, err := c.ExchangeAPIKey(ctx, ""); err == nil {
		t.Errorf("ExchangeAPIKey(\"\") succeeded, want error")
	}
	if n := len(srv.requests()); n != 0 {
		t.Errorf("invalid requests reached the server %d times", n)
	}
}

func TestParseSuccess(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		body       string
		wantExpiry time.Time
		wantErr    error
	}{
		{name: "expiration wins", body: okBody, wantExpiry: time.Unix(1893456000, 0)},
		{name: "expires_in only", body: `{"access_token":"a.b.c","token_type":"Bearer","expires_in":1200}`, wantExpiry: now.Add(20 * time.Minute)},
		{name: "no expiry", body: `{"access_token":"a.b.c"}`, wantErr: ErrUnexpected},
		{name: "no token", body: `{"expires_in":10}`, wantErr: ErrUnexpected},
		{name: "not json", body: `<html>portal</html>`, wantErr: ErrUnexpected},
		{name: "wrong type", body: `{"access_token":"x","expires_in":"` + testAccessToken + `"}`, wantErr: ErrUnexpected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRawServer(t, okHandler(tt.body))
			c := newTestClient(t, ClientOptions{BaseURL: srv.URL, Now: func() time.Time { return now }})
			resp, err := c.ExchangeAPIKey(context.Background(), testAPIKey)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				assertNoSecrets(t, err)
				return
			}
			if err != nil {
				t.Fatalf("exchange: %v", err)
			}
			if !resp.Expiry.Equal(tt.wantExpiry) {
				t.Errorf("expiry %v, want %v", resp.Expiry, tt.wantExpiry)
			}
			if tok := resp.Token(); tok.AccessToken != resp.AccessToken || !tok.Expiry.Equal(tt.wantExpiry) {
				t.Errorf("Token() does not match the response")
			}
		})
	}
	// Every documented field is parsed.
	srv := newRawServer(t, okHandler(okBody))
	resp, err := newTestClient(t, ClientOptions{BaseURL: srv.URL}).ExchangeAPIKey(context.Background(), testAPIKey)
	if err != nil {
		t.Fatal(err)
	}
	want := TokenResponse{AccessToken: testAccessToken, RefreshToken: "not_supported", TokenType: "Bearer",
		ExpiresIn: 3600, Expiration: 1893456000, Scope: "ibm openid", IMSUserID: 123, Expiry: time.Unix(1893456000, 0)}
	if *resp != want {
		t.Errorf("parsed %+v, want %+v", *resp, want)
	}
}

// iamError writes IAM's error envelope the way PROTOCOLS.md describes it.
func iamError(status int, code, message, details, requestID string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("transaction-id", "hdr-"+requestID)
		w.Header().Set("ibm-cloud-service-name", "iam-identity")
		w.WriteHeader(status)
		d := ""
		if details != "" {
			d = `"errorDetails":"` + details + `",`
		}
		io.WriteString(w, `{"errorCode":"`+code+`","errorMessage":"`+message+`",`+d+
			`"context":{"requestId":"`+requestID+`","requestType":"incoming.Identity_Token","userAgent":"cosmount/dev",`+
			`"url":"https://iam.cloud.ibm.com","instanceId":"iamid-1","threadId":"2a","host":"iamid-1",`+
			`"startTime":"28.11.2026 12:00:00:000 UTC","endTime":"28.11.2026 12:00:00:045 UTC","elapsedTime":"45",`+
			`"locale":"en_US","clusterName":"iam-id-prod"}}`)
	}
}

func TestErrorResponses(t *testing.T) {
	const ident = "crn-cluster-1:team-a:app-sa:app-7d9f"
	tests := []struct {
		name        string
		handler     http.HandlerFunc
		wantKind    error
		wantStatus  int
		wantCode    string
		wantReqID   string
		wantInError []string
	}{
		{
			name:       "not eligible names the identifier",
			handler:    iamError(400, "BXNIM0398E", "Selected trusted profile not eligible.", "Compute resource "+ident+" is not eligible for profile Profile-abc.", "req-398"),
			wantKind:   ErrNotEligible,
			wantStatus: 400, wantCode: "BXNIM0398E", wantReqID: "req-398",
			wantInError: []string{"BXNIM0398E", "Selected trusted profile not eligible.", ident, "req-398", "400"},
		},
		{
			name:       "unknown api key",
			handler:    iamError(400, "BXNIM0415E", "Provided API key could not be found.", "", "req-415"),
			wantKind:   ErrBadCredentials,
			wantStatus: 400, wantCode: "BXNIM0415E", wantReqID: "req-415",
			wantInError: []string{"BXNIM0415E", "Provided API key could not be found."},
		},
		{
			name:       "expired cr token",
			handler:    iamError(400, "BXNIM0407E", "Provided token is expired.", "", "req-407"),
			wantKind:   ErrBadCredentials,
			wantStatus: 400, wantCode: "BXNIM0407E", wantReqID: "req-407",
		},
		{
			name:       "401 unauthorized",
			handler:    iamError(401, "BXNIM0101E", "Unauthorized.", "", "req-401"),
			wantKind:   ErrBadCredentials,
			wantStatus: 401, wantCode: "BXNIM0101E", wantReqID: "req-401",
		},
		{
			name:       "json 503",
			handler:    iamError(503, "BXNIM0513E", "Service unavailable.", "", "req-503"),
			wantKind:   ErrTransient,
			wantStatus: 503, wantCode: "BXNIM0513E", wantReqID: "req-503",
		},
		{
			name: "request id from header when body has none",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("transaction-id", "tx-42")
				w.WriteHeader(400)
				io.WriteString(w, `{"errorCode":"BXNIM0109E","errorMessage":"Property missing or empty."}`)
			},
			wantKind:   ErrBadCredentials,
			wantStatus: 400, wantCode: "BXNIM0109E", wantReqID: "tx-42",
			wantInError: []string{"tx-42"},
		},
		{
			name: "non-json 502 from a proxy",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				w.WriteHeader(502)
				io.WriteString(w, "<html>\n<head><title>502 Bad Gateway</title></head>\r\n<body>"+strings.Repeat("x", 1000)+"</body></html>")
			},
			wantKind:    ErrTransient,
			wantStatus:  502,
			wantInError: []string{"HTTP 502", "<html> <head><title>502 Bad Gateway</title></head> <body>xxx", "..."},
		},
		{
			name:        "empty 429",
			handler:     func(w http.ResponseWriter, r *http.Request) { w.Header().Set("Retry-After", "3"); w.WriteHeader(429) },
			wantKind:    ErrTransient,
			wantStatus:  429,
			wantInError: []string{"Too Many Requests"},
		},
		{
			name:       "405 is unexpected",
			handler:    iamError(405, "BXNIM0060E", "HTTP 405 Method Not Allowed", "", "req-405"),
			wantKind:   ErrUnexpected,
			wantStatus: 405, wantCode: "BXNIM0060E", wantReqID: "req-405",
		},
		{
			name: "404 plain text",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "404 page not found", http.StatusNotFound)
			},
			wantKind:    ErrUnexpected,
			wantStatus:  404,
			wantInError: []string{"404 page not found"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRawServer(t, tt.handler)
			c := newTestClient(t, ClientOptions{BaseURL: srv.URL})
			_, err := c.ExchangeCRToken(context.Background(), CRTokenRequest{CRToken: testCRToken, Profile: Profile{ID: "Profile-abc"}})
			if !errors.Is(err, tt.wantKind) {
				t.Fatalf("err = %v, want kind %v", err, tt.wantKind)
			}
			for _, other := range []error{ErrNotEligible, ErrBadCredentials, ErrTransient, ErrUnexpected} {
				if other != tt.wantKind && errors.Is(err, other) {
					t.Errorf("err is also %v", other)
				}
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err %T is not *iam.Error", err)
			}
			if e.StatusCode != tt.wantStatus || e.ErrorCode != tt.wantCode || e.RequestID != tt.wantReqID {
				t.Errorf("got status=%d code=%q request=%q, want %d %q %q", e.StatusCode, e.ErrorCode, e.RequestID,
					tt.wantStatus, tt.wantCode, tt.wantReqID)
			}
			if e.Kind() != tt.wantKind || Retryable(err) != (tt.wantKind == ErrTransient) {
				t.Errorf("Kind()=%v Retryable=%v", e.Kind(), Retryable(err))
			}
			msg := err.Error()
			for _, s := range tt.wantInError {
				if !strings.Contains(msg, s) {
					t.Errorf("error %q does not contain %q", msg, s)
				}
			}
			if len(msg) > 600 {
				t.Errorf("error string is %d bytes, want it truncated", len(msg))
			}
			assertNoSecrets(t, err)
		})
	}
}

// TestErrorsNeverEchoSecrets: even a server that echoes the request (form
// and headers) back in its error must not make a secret reach an error string.
func TestErrorsNeverEchoSecrets(t *testing.T) {
	echo := func(asJSON bool, status int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			form, _ := url.ParseQuery(string(body))
			all := string(body) + " auth=" + r.Header.Get("Authorization") + " raw=" + form.Get("cr_token") + form.Get("apikey")
			w.WriteHeader(status)
			if asJSON {
				io.WriteString(w, `{"errorCode":"BXNIM0415E","errorMessage":"bad `+strings.ReplaceAll(all, `"`, ``)+
					`","errorDetails":"`+testAccessToken+`","context":{"requestId":"`+testCRToken+`"}}`)
				return
			}
			io.WriteString(w, all)
		}
	}
	for _, tc := range []struct {
		name   string
		asJSON bool
		status int
	}{{"json 400", true, 400}, {"text 400", false, 400}, {"text 500", false, 500}, {"json 503", true, 503}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRawServer(t, echo(tc.asJSON, tc.status))
			c := newTestClient(t, ClientOptions{BaseURL: srv.URL, ClientID: "cosmount", ClientSecret: testClientSecret})
			_, err := c.ExchangeCRToken(context.Background(), CRTokenRequest{CRToken: testCRToken, Profile: Profile{ID: "p"}})
			if err == nil {
				t.Fatal("exchange succeeded")
			}
			assertNoSecrets(t, err)
			_, err = c.ExchangeAPIKey(context.Background(), testAPIKey)
			if err == nil {
				t.Fatal("exchange succeeded")
			}
			assertNoSecrets(t, err)
		})
	}
}

func TestNetworkErrorsAreTransient(t *testing.T) {
	t.Run("connection refused", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		base := srv.URL
		srv.Close()
		c := newTestClient(t, ClientOptions{BaseURL: base})
		_, err := c.ExchangeAPIKey(context.Background(), testAPIKey)
		if !errors.Is(err, ErrTransient) {
			t.Fatalf("err = %v, want transient", err)
		}
		var e *Error
		if !errors.As(err, &e) || e.StatusCode != 0 {
			t.Errorf("want *Error with status 0, got %#v", err)
		}
		assertNoSecrets(t, err)
	})
	t.Run("timeout", func(t *testing.T) {
		srv := newRawServer(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		c := newTestClient(t, ClientOptions{BaseURL: srv.URL, Timeout: 100 * time.Millisecond})
		_, err := c.ExchangeAPIKey(context.Background(), testAPIKey)
		if !errors.Is(err, ErrTransient) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want transient deadline exceeded", err)
		}
		assertNoSecrets(t, err)
	})
}

func assertNoSecrets(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	for _, s := range []string{testCRToken, testAPIKey, testClientSecret, testAccessToken,
		"c2lnbmF0dXJlLXNlY3JldA", "eyJzdWIiOiJzeXN0ZW06c2EifQ", "Zq8rT3vKx0secret", "Wq91",
		base64.StdEncoding.EncodeToString([]byte("cosmount:" + testClientSecret))} {
		if strings.Contains(msg, s) {
			t.Errorf("error string leaks a secret (%d bytes matched): %q", len(s), msg)
		}
	}
}
