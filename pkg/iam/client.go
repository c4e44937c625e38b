package iam

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cosmount/cosmount/pkg/version"
)

const (
	// DefaultBaseURL is IBM Cloud's public IAM endpoint.
	DefaultBaseURL = "https://iam.cloud.ibm.com"
	// DefaultTimeout bounds one token request, as IBM's own clients do.
	DefaultTimeout = 30 * time.Second

	tokenPath = "/identity/token"

	// GrantCRToken exchanges a compute-resource token for a trusted profile's token.
	GrantCRToken = "urn:ibm:params:oauth:grant-type:cr-token"
	// GrantAPIKey exchanges an API key.
	GrantAPIKey = "urn:ibm:params:oauth:grant-type:apikey"

	// maxResponseBody keeps a misbehaving endpoint from making us buffer
	// without bound; real token responses are a few KiB.
	maxResponseBody = 1 << 20
)

// Exchanger performs IAM grants. *Client is the real implementation; sources
// take this interface so they can be tested against a fake.
type Exchanger interface {
	ExchangeCRToken(ctx context.Context, req CRTokenRequest) (*TokenResponse, error)
	ExchangeAPIKey(ctx context.Context, apiKey string) (*TokenResponse, error)
}

// ClientOptions configures a Client. The zero value talks to DefaultBaseURL
// without client credentials.
type ClientOptions struct {
	// BaseURL is the IAM endpoint, with or without the /identity/token suffix
	// and trailing slash. Empty means DefaultBaseURL.
	BaseURL string
	// ClientID and ClientSecret, when both set, are sent as HTTP Basic auth.
	// Neither is required for the cr-token or apikey grants.
	ClientID     string
	ClientSecret string
	// Version goes into the User-Agent "cosmount/<Version>"; empty means the
	// build's version (pkg/version).
	Version string
	// Timeout bounds each request; zero means DefaultTimeout.
	Timeout time.Duration
	// HTTPClient is used for requests; nil means a client with default transport.
	HTTPClient *http.Client
	// Now is the clock used to turn expires_in into an expiry; nil means time.Now.
	Now func() time.Time
}

// Client performs token grants against POST {base}/identity/token.
// It is safe for concurrent use and holds no token state.
type Client struct {
	endpoint  string
	basicAuth string   // "Basic ..." or empty
	secrets   []string // client credentials, redacted from error text
	userAgent string
	timeout   time.Duration
	http      *http.Client
	now       func() time.Time
}

var _ Exchanger = (*Client)(nil)

// NewClient validates opts and returns a Client.
func NewClient(opts ClientOptions) (*Client, error) {
	endpoint, err := tokenEndpoint(opts.BaseURL)
	if err != nil {
		return nil, err
	}
	if (opts.ClientID == "") != (opts.ClientSecret == "") {
		return nil, errors.New("iam: client ID and client secret must be set together")
	}
	c := &Client{
		endpoint:  endpoint,
		userAgent: version.UserAgent(),
		timeout:   opts.Timeout,
		http:      opts.HTTPClient,
		now:       opts.Now,
	}
	if opts.ClientID != "" {
		req := http.Request{Header: http.Header{}}
		req.SetBasicAuth(opts.ClientID, opts.ClientSecret)
		c.basicAuth = req.Header.Get("Authorization")
		c.secrets = []string{opts.ClientSecret, strings.TrimPrefix(c.basicAuth, "Basic ")}
	}
	if opts.Version != "" {
		c.userAgent = "cosmount/" + opts.Version
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	// Every token request carries a secret in its body (the pod's token, an
	// API key), and a 307 or 308 would make net/http post that body again
	// to whatever host the answer names. No redirect is ever followed.
	hc := http.Client{}
	if c.http != nil {
		hc = *c.http
	}
	hc.CheckRedirect = refuseRedirect
	c.http = &hc
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// refuseRedirect makes net/http hand a redirect back instead of following it.
func refuseRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// redirectMessage describes a refused redirect by its target's host only:
// a Location may carry anything, and error texts reach pod events.
func redirectMessage(resp *http.Response) string {
	host := "an unnamed location"
	if u, err := resp.Location(); err == nil && u.Host != "" {
		host = u.Host
	}
	return fmt.Sprintf("IAM answered HTTP %d, a redirect to %s; redirects are never followed with a token in the request", resp.StatusCode, host)
}

// Endpoint returns the full token URL the client posts to.
func (c *Client) Endpoint() string { return c.endpoint }

// tokenEndpoint turns a configured base URL into the token URL.
func tokenEndpoint(base string) (string, error) {
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("iam: invalid base URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("iam: base URL %q must be http or https", base)
	}
	if u.Host == "" {
		return "", fmt.Errorf("iam: base URL %q has no host", base)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("iam: base URL for host %q must not carry user info, query or fragment", u.Host)
	}
	p := strings.TrimRight(u.Path, "/")
	if !strings.HasSuffix(p, tokenPath) {
		p += tokenPath
	}
	u.Path = p
	u.RawPath = ""
	return u.String(), nil
}

// Profile names a trusted profile. Exactly one field must be set.
type Profile struct {
	ID   string // e.g. Profile-1234...
	Name string
	CRN  string
}

// Validate checks that exactly one of ID, Name and CRN is set.
func (p Profile) Validate() error {
	n := 0
	for _, v := range []string{p.ID, p.Name, p.CRN} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return errors.New("iam: exactly one of trusted profile ID, name or CRN must be set")
	}
	return nil
}

// String identifies the profile for logs; none of its fields is secret.
func (p Profile) String() string {
	switch {
	case p.ID != "":
		return "id:" + p.ID
	case p.Name != "":
		return "name:" + p.Name
	case p.CRN != "":
		return "crn:" + p.CRN
	}
	return "none"
}

// CRTokenRequest is the cr-token grant's input.
type CRTokenRequest struct {
	// CRToken is the compute-resource token (the projected service-account JWT).
	CRToken string
	Profile Profile
	// Scope is optional.
	Scope string
}

// TokenResponse is IAM's 200 answer. RefreshToken is opaque and unused for
// cr-token (IAM answers "not_supported").
type TokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	Expiration   int64  `json:"expiration"`
	Scope        string `json:"scope"`
	IMSUserID    int64  `json:"ims_user_id"`

	// Expiry is Expiration when present, else the response time plus ExpiresIn.
	Expiry time.Time `json:"-"`
}

// Token returns the access token with its expiry.
func (r *TokenResponse) Token() Token {
	return Token{AccessToken: r.AccessToken, Expiry: r.Expiry}
}

// ExchangeCRToken performs the cr-token grant.
func (c *Client) ExchangeCRToken(ctx context.Context, req CRTokenRequest) (*TokenResponse, error) {
	if err := req.Profile.Validate(); err != nil {
		return nil, err
	}
	if req.CRToken == "" {
		return nil, errors.New("iam: compute-resource token is empty")
	}
	form := url.Values{}
	form.Set("grant_type", GrantCRToken)
	form.Set("cr_token", req.CRToken)
	switch {
	case req.Profile.ID != "":
		form.Set("profile_id", req.Profile.ID)
	case req.Profile.Name != "":
		form.Set("profile_name", req.Profile.Name)
	default:
		form.Set("profile_crn", req.Profile.CRN)
	}
	if req.Scope != "" {
		form.Set("scope", req.Scope)
	}
	return c.exchange(ctx, form, req.CRToken)
}

// ExchangeAPIKey performs the apikey grant.
func (c *Client) ExchangeAPIKey(ctx context.Context, apiKey string) (*TokenResponse, error) {
	if apiKey == "" {
		return nil, errors.New("iam: API key is empty")
	}
	form := url.Values{}
	form.Set("grant_type", GrantAPIKey)
	form.Set("apikey", apiKey)
	form.Set("response_type", "cloud_iam")
	return c.exchange(ctx, form, apiKey)
}

func (c *Client) exchange(ctx context.Context, form url.Values, secret string) (*TokenResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	body := form.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, strings.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("iam: building token request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if c.basicAuth != "" {
		req.Header.Set("Authorization", c.basicAuth)
	}

	resp, err := c.http.Do(req)
	if err != nil {
		// A *url.Error names the method and URL only, never the body.
		return nil, &Error{kind: ErrTransient, err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		return nil, &Error{StatusCode: resp.StatusCode, RequestID: resp.Header.Get("transaction-id"), kind: ErrUnexpected,
			ErrorMessage: redirectMessage(resp)}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return nil, &Error{StatusCode: resp.StatusCode, RequestID: resp.Header.Get("transaction-id"),
			kind: ErrTransient, err: fmt.Errorf("reading response: %w", err)}
	}
	// Longest first: the whole form, then the secret raw and form-encoded.
	secrets := append([]string{body, secret, url.QueryEscape(secret)}, c.secrets...)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, parseError(resp, data, secrets)
	}
	return c.parseSuccess(resp, data)
}

func (c *Client) parseSuccess(resp *http.Response, data []byte) (*TokenResponse, error) {
	fail := func(msg string, cause error) error {
		return &Error{StatusCode: resp.StatusCode, ErrorMessage: msg,
			RequestID: resp.Header.Get("transaction-id"), kind: ErrUnexpected, err: cause}
	}
	var tr TokenResponse
	if err := json.Unmarshal(data, &tr); err != nil {
		// The json error names offsets and types, never the token text.
		return nil, fail("response body is not a token response", stripJSONValue(err))
	}
	if tr.AccessToken == "" {
		return nil, fail("response carries no access_token", nil)
	}
	switch {
	case tr.Expiration > 0:
		tr.Expiry = time.Unix(tr.Expiration, 0)
	case tr.ExpiresIn > 0:
		tr.Expiry = c.now().Add(time.Duration(tr.ExpiresIn) * time.Second)
	default:
		return nil, fail("response carries neither expiration nor expires_in", nil)
	}
	return &tr, nil
}

// stripJSONValue keeps a JSON decoding error's position and type but drops
// any quoted input it may echo.
func stripJSONValue(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("invalid JSON at offset %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("field %q has JSON type %s", te.Field, te.Value)
	}
	return errors.New("invalid JSON")
}

// errorEnvelope is IAM's JSON error body.
type errorEnvelope struct {
	ErrorCode    string `json:"errorCode"`
	ErrorMessage string `json:"errorMessage"`
	ErrorDetails string `json:"errorDetails"`
	Context      struct {
		RequestID string `json:"requestId"`
	} `json:"context"`
}

func parseError(resp *http.Response, data []byte, secrets []string) *Error {
	e := &Error{StatusCode: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"))}
	var env errorEnvelope
	if json.Unmarshal(data, &env) == nil && (env.ErrorCode != "" || env.ErrorMessage != "") {
		e.ErrorCode = sanitize(env.ErrorCode, secrets, 64)
		e.ErrorMessage = sanitize(env.ErrorMessage, secrets, maxErrorText)
		e.ErrorDetails = sanitize(env.ErrorDetails, secrets, maxErrorText)
		e.RequestID = sanitize(env.Context.RequestID, secrets, 128)
	} else {
		text := sanitize(string(bytes.TrimSpace(data)), secrets, maxErrorText)
		if text == "" {
			text = http.StatusText(resp.StatusCode)
		}
		e.ErrorMessage = text
	}
	if e.RequestID == "" {
		e.RequestID = sanitize(resp.Header.Get("transaction-id"), secrets, 128)
	}
	e.kind = classify(resp.StatusCode, e.ErrorCode)
	return e
}

// classify maps an IAM error answer to its kind.
func classify(status int, code string) error {
	switch {
	case code == "BXNIM0398E":
		return ErrNotEligible
	case status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout:
		return ErrTransient
	case status == http.StatusBadRequest || status == http.StatusUnauthorized || status == http.StatusForbidden:
		return ErrBadCredentials
	default:
		return ErrUnexpected
	}
}

// parseRetryAfter understands the delta-seconds form only; IAM does not send
// HTTP dates, and a wrong guess merely falls back to our own backoff.
// A larger hint is taken as this much (and a number of seconds that large
// would overflow a time.Duration).
func parseRetryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(min(n, maxRetryAfter)) * time.Second
}

// maxRetryAfter caps a server's Retry-After, in seconds: a day.
const maxRetryAfter = 24 * 60 * 60
