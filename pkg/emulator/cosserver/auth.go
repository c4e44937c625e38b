package cosserver

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/cosmount/cosmount/pkg/emulator/config"
)

const (
	sigV4Algorithm = "AWS4-HMAC-SHA256"
	amzDateFormat  = "20060102T150405Z"
	// maxClockSkew is how far a SigV4 request time may be from the server's.
	maxClockSkew = 15 * time.Minute

	unsignedPayload          = "UNSIGNED-PAYLOAD"
	streamingSignedPayload   = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
	streamingSignedTrailer   = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
	streamingUnsignedTrailer = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
)

func errSignatureMismatch() *apiError {
	return &apiError{Status: http.StatusForbidden, Code: "SignatureDoesNotMatch",
		Message: "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."}
}

// authenticate establishes rq.principal and prepares rq.body.
func (s *Server) authenticate(rq *request) *apiError {
	authz := rq.r.Header.Get("Authorization")
	scheme, rest, _ := strings.Cut(authz, " ")
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		return s.authBearer(rq, strings.TrimSpace(rest))
	case scheme == sigV4Algorithm:
		return s.authSigV4(rq, rest)
	case authz == "" && rq.query.Get("X-Amz-Algorithm") != "":
		return errAccessDenied("Presigned URLs are not supported by the emulator")
	case authz == "":
		return errAccessDenied("Anonymous access is not allowed")
	}
	return errAccessDenied("Unsupported authorization scheme")
}

// expiredError is how a Verifier may mark an expired token.
type expiredError interface{ Expired() bool }

// tokenExpired tells an expired token from an invalid one, for the message
// only: the answer is 403 AccessDenied either way.
func tokenExpired(err error) bool {
	var ee expiredError
	switch {
	case err == nil:
		return false
	case errors.As(err, &ee):
		return ee.Expired()
	case errors.Is(err, jwt.ErrTokenExpired):
		return true
	}
	// Verifiers with their own sentinel errors (iamserver's
	// ErrAccessTokenExpired) say so in the text.
	return strings.Contains(strings.ToLower(err.Error()), "expired")
}

func (s *Server) authBearer(rq *request, token string) *apiError {
	if token == "" || s.verifier == nil {
		return errAccessDenied("")
	}
	p, err := s.verifier.VerifyAccessToken(token)
	if err != nil || p == nil {
		if tokenExpired(err) {
			return errAccessDenied("Access Denied: the access token has expired")
		}
		return errAccessDenied("Access Denied: the access token is not valid")
	}
	rq.principal = p
	mode := rq.r.Header.Get("X-Amz-Content-Sha256")
	if mode == streamingSignedPayload || mode == streamingSignedTrailer {
		return errInvalidRequest("A signed streaming payload needs SigV4 authentication")
	}
	body, e := newPayload(rq.r, mode, nil)
	if e != nil {
		return e
	}
	rq.body = body
	return nil
}

// sigV4Auth is a parsed SigV4 Authorization header.
type sigV4Auth struct {
	accessKey, date, region, service string
	signedHeaders                    []string
	signature                        string
}

func parseSigV4(v string) (*sigV4Auth, bool) {
	a := &sigV4Auth{}
	for _, part := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, false
		}
		switch k {
		case "Credential":
			f := strings.Split(val, "/")
			if len(f) != 5 || f[4] != "aws4_request" {
				return nil, false
			}
			a.accessKey, a.date, a.region, a.service = f[0], f[1], f[2], f[3]
		case "SignedHeaders":
			a.signedHeaders = strings.Split(val, ";")
		case "Signature":
			a.signature = val
		}
	}
	if a.accessKey == "" || a.signature == "" || len(a.signedHeaders) == 0 {
		return nil, false
	}
	return a, true
}

func (s *Server) authSigV4(rq *request, header string) *apiError {
	r := rq.r
	a, ok := parseSigV4(header)
	if !ok {
		return errInvalidArgument("The authorization header is malformed.")
	}
	key := findHMACKey(rq.cfg, a.accessKey)
	if key == nil {
		return &apiError{Status: http.StatusForbidden, Code: "InvalidAccessKeyId",
			Message: "The AWS Access Key Id you provided does not exist in our records."}
	}
	secret, err := hmacSecret(key)
	if err != nil {
		return errInternal()
	}
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse(amzDateFormat, amzDate)
	if err != nil {
		if t, err = http.ParseTime(r.Header.Get("Date")); err != nil {
			return errAccessDenied("AWS authentication requires a valid Date or x-amz-date header")
		}
		amzDate = t.UTC().Format(amzDateFormat)
	}
	if d := s.clock().Sub(t); d > maxClockSkew || d < -maxClockSkew {
		return &apiError{Status: http.StatusForbidden, Code: "RequestTimeTooSkewed",
			Message: "The difference between the request time and the current time is too large."}
	}
	if a.service != "s3" || a.date != t.UTC().Format("20060102") || !slices.Contains(a.signedHeaders, "host") {
		return errSignatureMismatch()
	}
	payloadHash := r.Header.Get("X-Amz-Content-Sha256")
	if payloadHash == "" {
		return errInvalidRequest("Missing required header for this request: x-amz-content-sha256")
	}
	scope := a.date + "/" + a.region + "/" + a.service + "/aws4_request"
	signingKey := deriveSigningKey(secret, a.date, a.region, a.service)
	headers := canonicalHeaders(r, a.signedHeaders)
	query := canonicalQuery(r.URL.RawQuery)
	matched := false
	for _, uri := range canonicalURIs(r) {
		creq := strings.Join([]string{r.Method, uri, query, headers, strings.Join(a.signedHeaders, ";"), payloadHash}, "\n")
		sts := sigV4Algorithm + "\n" + amzDate + "\n" + scope + "\n" + hexSHA256([]byte(creq))
		if hmac.Equal([]byte(hex.EncodeToString(hmacSHA256(signingKey, sts))), []byte(a.signature)) {
			matched = true
			break
		}
	}
	if !matched {
		return errSignatureMismatch()
	}
	rq.principal = hmacPrincipal(key)
	var chunks *chunkSigner
	if payloadHash == streamingSignedPayload || payloadHash == streamingSignedTrailer {
		chunks = &chunkSigner{key: signingKey, amzDate: amzDate, scope: scope, prev: a.signature}
	}
	body, e := newPayload(r, payloadHash, chunks)
	if e != nil {
		return e
	}
	rq.body = body
	return nil
}

func findHMACKey(cfg *config.Config, id string) *config.HMACKey {
	for i := range cfg.HMACKeys {
		if cfg.HMACKeys[i].AccessKeyID == id {
			return &cfg.HMACKeys[i]
		}
	}
	return nil
}

func hmacSecret(k *config.HMACKey) (string, error) {
	if k.SecretAccessKey != "" {
		return k.SecretAccessKey, nil
	}
	b, err := os.ReadFile(k.SecretAccessKeyFile)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// hmacPrincipal is the principal of an HMAC key. Policies without a service
// instance are confined to the key's instance, as an IBM HMAC credential
// belongs to one instance.
func hmacPrincipal(k *config.HMACKey) *config.Principal {
	p := &config.Principal{Type: config.PrincipalHMAC, ID: k.AccessKeyID, Name: k.AccessKeyID}
	for _, pol := range k.Policies {
		if pol.ServiceInstance == "" {
			pol.ServiceInstance = k.ServiceInstance
		}
		p.Policies = append(p.Policies, pol)
	}
	return p
}

func deriveSigningKey(secret, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, "aws4_request")
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

func hexSHA256(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// canonicalHeaders renders the signed headers, each "name:value\n".
func canonicalHeaders(r *http.Request, names []string) string {
	var b strings.Builder
	for _, n := range names {
		var vals []string
		switch n {
		case "host":
			vals = []string{r.Host}
		case "content-length":
			vals = r.Header.Values("Content-Length")
			if len(vals) == 0 && r.ContentLength >= 0 {
				vals = []string{strconv.FormatInt(r.ContentLength, 10)}
			}
		case "transfer-encoding":
			vals = r.TransferEncoding
		default:
			vals = r.Header.Values(n)
		}
		trimmed := make([]string, len(vals))
		for i, v := range vals {
			trimmed[i] = strings.Join(strings.Fields(v), " ")
		}
		b.WriteString(n)
		b.WriteByte(':')
		b.WriteString(strings.Join(trimmed, ","))
		b.WriteByte('\n')
	}
	return b.String()
}

// canonicalQuery sorts and re-encodes the query string as SigV4 wants.
func canonicalQuery(raw string) string {
	type kv struct{ k, v string }
	var pairs []kv
	for _, p := range strings.Split(raw, "&") {
		if p == "" {
			continue
		}
		k, v, _ := strings.Cut(p, "=")
		pairs = append(pairs, kv{uriEncode(queryUnescape(k), true), uriEncode(queryUnescape(v), true)})
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	parts := make([]string, len(pairs))
	for i, p := range pairs {
		parts[i] = p.k + "=" + p.v
	}
	return strings.Join(parts, "&")
}

func queryUnescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			v, _ := strconv.ParseUint(s[i+1:i+3], 16, 8)
			b.WriteByte(byte(v))
			i += 2
			continue
		}
		if c == '+' {
			c = ' '
		}
		b.WriteByte(c)
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// canonicalURIs are the path encodings a client may have signed: exactly the
// bytes it sent, and the canonical S3 encoding of the decoded path (clients
// differ in which characters they escape on the wire).
func canonicalURIs(r *http.Request) []string {
	sent := r.RequestURI
	if i := strings.IndexByte(sent, '?'); i >= 0 {
		sent = sent[:i]
	}
	if !strings.HasPrefix(sent, "/") {
		sent = r.URL.EscapedPath()
	}
	if sent == "" {
		sent = "/"
	}
	canon := uriEncode(r.URL.Path, false)
	if canon == "" {
		canon = "/"
	}
	if canon == sent {
		return []string{sent}
	}
	return []string{sent, canon}
}

// uriEncode is SigV4's UriEncode: everything but unreserved characters is
// percent-encoded (upper-case hex); '/' is kept unless encodeSlash.
func uriEncode(s string, encodeSlash bool) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == '~' || (c == '/' && !encodeSlash) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}
