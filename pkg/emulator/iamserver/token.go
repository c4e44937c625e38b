package iamserver

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/emulator/audit"
	"github.com/cosmount/cosmount/pkg/emulator/config"
)

// Grant types of PROTOCOLS.md section 1.
const (
	GrantCRToken = "urn:ibm:params:oauth:grant-type:cr-token"
	GrantAPIKey  = "urn:ibm:params:oauth:grant-type:apikey"
)

// IAM error codes. The first five are IBM's, documented in PROTOCOLS.md.
const (
	CodeMethodNotAllowed = "BXNIM0060E"
	CodeMissingProperty  = "BXNIM0109E"
	CodeNotEligible      = "BXNIM0398E"
	CodeInvalidCRToken   = "BXNIM0407E"
	CodeUnknownAPIKey    = "BXNIM0415E"
	// CodeUnknownProfile is a guess: IBM's code for a profile that does not
	// exist is not documented publicly; this one follows the BXNIM family.
	CodeUnknownProfile = "BXNIM0408E"
	// CodeUnsupportedGrant is a guess too (IBM's code is not documented).
	CodeUnsupportedGrant = "BXNIM0103E"
	// CodeUnavailable is the emulator's own code for "the issuer's keys could
	// not be fetched", answered with 503 so that clients retry.
	CodeUnavailable = "BXNIM0500E"
)

const maxFormBytes = 1 << 20

// apiError is one refusal: HTTP status, IAM code, message and details.
type apiError struct {
	status  int
	code    string
	message string
	details string
}

func methodNotAllowed(method, allowed string) *apiError {
	return &apiError{http.StatusMethodNotAllowed, CodeMethodNotAllowed,
		fmt.Sprintf("Method %s is not supported, use %s. HTTP 405 Method Not Allowed", method, allowed), ""}
}

func missing(field string) *apiError {
	return &apiError{http.StatusBadRequest, CodeMissingProperty, "Property missing or empty.", "Property '" + field + "' is missing or empty."}
}

// tokenResponse is IAM's 200 body; the field order is IBM's.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	IMSUserID    int64  `json:"ims_user_id"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	Expiration   int64  `json:"expiration"`
	Scope        string `json:"scope"`
}

type errorContext struct {
	RequestID   string `json:"requestId"`
	RequestType string `json:"requestType"`
	UserAgent   string `json:"userAgent"`
	URL         string `json:"url"`
	InstanceID  string `json:"instanceId"`
	ThreadID    string `json:"threadId"`
	Host        string `json:"host"`
	StartTime   string `json:"startTime"`
	EndTime     string `json:"endTime"`
	ElapsedTime string `json:"elapsedTime"`
	Locale      string `json:"locale"`
	ClusterName string `json:"clusterName"`
}

type errorBody struct {
	ErrorCode    string       `json:"errorCode"`
	ErrorMessage string       `json:"errorMessage"`
	ErrorDetails string       `json:"errorDetails,omitempty"`
	Context      errorContext `json:"context"`
}

// exchange is what serveToken learned, for the log line and the audit record.
type exchange struct {
	grant      string
	profileID  string
	identifier string
	principal  *config.Principal
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	start := s.clock()
	rec := audit.From(r.Context())
	rec.SetOperation("Token", "", "")
	var ex exchange
	resp, aerr := s.runExchange(w, r, start, &ex)
	reqID := newRequestID()
	rec.SetRequestID(reqID)
	w.Header().Set("transaction-id", reqID)
	outcome := "granted"
	if aerr != nil {
		outcome = aerr.code
		rec.SetError(aerr.code)
	} else {
		rec.SetPrincipal(string(ex.principal.Type), ex.principal.ID, "")
	}
	klog.InfoS("IAM token exchange", "requestID", reqID, "grant", shortGrant(ex.grant), "profileID", ex.profileID,
		"identifier", ex.identifier, "outcome", outcome)
	if aerr != nil {
		s.writeErrorID(w, r, start, reqID, aerr)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("ibm-cloud-service-name", "iam-identity")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(resp)
}

func shortGrant(g string) string {
	switch g {
	case GrantCRToken:
		return "cr-token"
	case GrantAPIKey:
		return "apikey"
	}
	if len(g) > 64 {
		g = g[:64]
	}
	return g
}

// runExchange runs the checks of one token request in IBM's order and mints
// the access token.
func (s *Server) runExchange(w http.ResponseWriter, r *http.Request, now time.Time, ex *exchange) (*tokenResponse, *apiError) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, methodNotAllowed(r.Method, http.MethodPost)
	}
	// Basic client credentials are optional: none, IBM's historical bx:bx and
	// any configured client id/secret are all accepted, as IAM does for
	// these grants.
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return nil, &apiError{http.StatusBadRequest, CodeMissingProperty, "Property missing or empty.", "The request body is not a valid form."}
	}
	cfg, issuers, lifetime := s.snapshot()
	ex.grant = r.PostForm.Get("grant_type")
	switch ex.grant {
	case "":
		return nil, missing("grant_type")
	case GrantCRToken:
		p, aerr := s.crTokenGrant(r, cfg, issuers, now, ex)
		if aerr != nil {
			return nil, aerr
		}
		ex.principal = &config.Principal{Type: config.PrincipalProfile, ID: p.ID, Name: p.Name, Policies: p.Policies}
	case GrantAPIKey:
		k, aerr := apiKeyGrant(r, cfg)
		if aerr != nil {
			return nil, aerr
		}
		ex.principal = &config.Principal{Type: config.PrincipalAPIKey, ID: k.ID, Name: k.Name, Policies: k.Policies}
	default:
		return nil, &apiError{http.StatusBadRequest, CodeUnsupportedGrant, "Unsupported grant type.", "Grant type '" + shortGrant(ex.grant) + "' is not supported by this endpoint."}
	}
	resp, err := s.mint(cfg, ex.principal, ex.grant, now, lifetime)
	if err != nil {
		klog.ErrorS(err, "Signing an access token failed")
		return nil, &apiError{http.StatusInternalServerError, CodeUnavailable, "Internal error.", ""}
	}
	return resp, nil
}

func (s *Server) crTokenGrant(r *http.Request, cfg *config.Config, issuers map[string]*issuerKeys, now time.Time, ex *exchange) (*config.Profile, *apiError) {
	// kubelet writes the projected token with a trailing newline at times,
	// and IBM's client sends the file as is.
	raw := strings.TrimRight(r.PostForm.Get("cr_token"), "\r\n")
	if raw == "" {
		return nil, missing("cr_token")
	}
	pid, pname, pcrn := r.PostForm.Get("profile_id"), r.PostForm.Get("profile_name"), r.PostForm.Get("profile_crn")
	if pid == "" && pname == "" && pcrn == "" {
		return nil, missing("profile_id")
	}
	ex.profileID = firstNonEmpty(pid, pname, pcrn)
	id, err := s.verifyCRToken(r.Context(), raw, issuers, now)
	if err != nil {
		var te *crTokenError
		if errors.As(err, &te) {
			return nil, &apiError{http.StatusBadRequest, CodeInvalidCRToken, "Provided CR token is invalid or expired.", te.detail}
		}
		klog.ErrorS(err, "Fetching the token issuer's keys failed")
		return nil, &apiError{http.StatusServiceUnavailable, CodeUnavailable, "The token issuer's keys are unavailable.",
			"The signing keys of the token's issuer could not be fetched; retry later."}
	}
	ex.identifier = id.identifier()
	p := findProfile(cfg, pid, pname, pcrn)
	if p == nil {
		return nil, &apiError{http.StatusBadRequest, CodeUnknownProfile, "Provided profile could not be found.", ""}
	}
	ex.profileID = p.ID
	if !eligible(p, id) {
		return nil, &apiError{http.StatusBadRequest, CodeNotEligible, "Selected trusted profile not eligible.",
			fmt.Sprintf("The compute resource '%s' is not eligible to use the trusted profile '%s'.", id.identifier(), p.ID)}
	}
	return p, nil
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

func apiKeyGrant(r *http.Request, cfg *config.Config) (*config.APIKey, *apiError) {
	given := strings.TrimSpace(r.PostForm.Get("apikey"))
	if given == "" {
		return nil, missing("apikey")
	}
	// Compare digests in constant time, and look at every key, so that timing
	// reveals neither a key's length nor which key came close.
	g := sha256.Sum256([]byte(given))
	var found *config.APIKey
	for i := range cfg.APIKeys {
		k := &cfg.APIKeys[i]
		secret := k.Key
		if k.KeyFile != "" {
			b, err := os.ReadFile(k.KeyFile)
			if err != nil {
				klog.ErrorS(err, "Reading an API key file failed", "apiKeyID", k.ID)
				continue
			}
			secret = strings.TrimSpace(string(b))
		}
		if secret == "" {
			continue
		}
		d := sha256.Sum256([]byte(secret))
		if subtle.ConstantTimeCompare(g[:], d[:]) == 1 && found == nil {
			found = k
		}
	}
	if found == nil {
		return nil, &apiError{http.StatusBadRequest, CodeUnknownAPIKey, "Provided API key could not be found.", ""}
	}
	return found, nil
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, start time.Time, aerr *apiError) {
	id := newRequestID()
	audit.From(r.Context()).SetRequestID(id)
	audit.From(r.Context()).SetError(aerr.code)
	w.Header().Set("transaction-id", id)
	s.writeErrorID(w, r, start, id, aerr)
}

// writeErrorID writes IBM's error envelope.
func (s *Server) writeErrorID(w http.ResponseWriter, r *http.Request, start time.Time, reqID string, aerr *apiError) {
	end := s.clock()
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	body := errorBody{
		ErrorCode:    aerr.code,
		ErrorMessage: aerr.message,
		ErrorDetails: aerr.details,
		Context: errorContext{
			RequestID:   reqID,
			RequestType: "incoming.Identity_Token",
			UserAgent:   r.UserAgent(),
			URL:         scheme + "://" + r.Host,
			InstanceID:  s.instanceID,
			ThreadID:    strconv.FormatUint(s.threads.Add(1), 16),
			Host:        s.host,
			StartTime:   ibmTime(start),
			EndTime:     ibmTime(end),
			ElapsedTime: strconv.FormatInt(max(end.Sub(start).Milliseconds(), 0), 10),
			Locale:      "en_US",
			ClusterName: "cosmount-emulator",
		},
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("ibm-cloud-service-name", "iam-identity")
	w.Header().Set("transaction-id", reqID)
	w.WriteHeader(aerr.status)
	_ = json.NewEncoder(w).Encode(body)
}

// ibmTime formats t as IAM does: "dd.MM.yyyy HH:mm:ss:SSS UTC" (Go's layout
// language has no colon-separated milliseconds, hence the Sprintf).
func ibmTime(t time.Time) string {
	t = t.UTC()
	return fmt.Sprintf("%s:%03d UTC", t.Format("02.01.2006 15:04:05"), t.Nanosecond()/int(time.Millisecond))
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails on supported platforms
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
