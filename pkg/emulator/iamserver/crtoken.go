package iamserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/cosmount/cosmount/pkg/emulator/config"
	"github.com/cosmount/cosmount/pkg/emulator/satoken"
)

const (
	// crLeeway absorbs clock skew between the cluster and the emulator.
	crLeeway = 10 * time.Second
	// maxCRLifetime: IBM refuses projected tokens that live longer than an hour.
	maxCRLifetime = time.Hour
	// maxDocBytes bounds discovery documents and key sets.
	maxDocBytes = 1 << 20
)

// crAlgorithms are the JWS algorithms kube-apiserver can sign with.
var crAlgorithms = []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"}

// issuerKeys is one configured issuer and the cache of its public keys.
type issuerKeys struct {
	cfg    config.Issuer
	client *http.Client // nil for a JWKS file
	state  *keyState    // shared across SetConfig while the key source is unchanged
}

type keyState struct {
	mu      sync.Mutex
	keys    []satoken.PublicKey
	loaded  bool
	fetched time.Time // last fetch attempt
}

func (ik *issuerKeys) sameSource(is config.Issuer) bool {
	a := ik.cfg
	return a.JWKSFile == is.JWKSFile && a.DiscoveryURL == is.DiscoveryURL && a.DiscoveryCAFile == is.DiscoveryCAFile &&
		a.DiscoveryBearerTokenFile == is.DiscoveryBearerTokenFile && a.InsecureSkipTLSVerify == is.InsecureSkipTLSVerify
}

func (ik *issuerKeys) withConfig(is config.Issuer) *issuerKeys {
	return &issuerKeys{cfg: is, client: ik.client, state: ik.state}
}

// errKeysUnavailable: the issuer's keys could not be read or fetched; the
// token may well be valid, so the caller answers with a server error.
var errKeysUnavailable = errors.New("issuer keys unavailable")

// candidates returns the keys that may have signed a token with this kid
// (every key when the token names none). An unknown kid triggers a refetch,
// at most once per refetch interval, so that rotated keys are picked up.
func (ik *issuerKeys) candidates(ctx context.Context, kid string, now time.Time, refetch time.Duration) ([]satoken.PublicKey, error) {
	st := ik.state
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.loaded {
		if err := ik.fetchLocked(ctx, now); err != nil {
			return nil, err
		}
	}
	found := matching(st.keys, kid)
	if len(found) == 0 && now.Sub(st.fetched) >= refetch {
		if err := ik.fetchLocked(ctx, now); err != nil {
			return nil, err
		}
		found = matching(st.keys, kid)
	}
	return found, nil
}

func matching(keys []satoken.PublicKey, kid string) []satoken.PublicKey {
	if kid == "" {
		return keys
	}
	var out []satoken.PublicKey
	for _, k := range keys {
		if k.KID == kid {
			out = append(out, k)
		}
	}
	return out
}

func (ik *issuerKeys) fetchLocked(ctx context.Context, now time.Time) error {
	st := ik.state
	st.fetched = now
	var data []byte
	var err error
	if ik.cfg.JWKSFile != "" {
		data, err = os.ReadFile(ik.cfg.JWKSFile)
	} else {
		data, err = ik.fetchDiscovery(ctx)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", errKeysUnavailable, err)
	}
	keys, err := satoken.ParseJWKS(data)
	if err != nil {
		return fmt.Errorf("%w: %v", errKeysUnavailable, err)
	}
	st.keys, st.loaded = keys, true
	return nil
}

// fetchDiscovery follows DiscoveryURL/.well-known/openid-configuration to the
// JWKS, as kube-apiserver serves them.
func (ik *issuerKeys) fetchDiscovery(ctx context.Context) ([]byte, error) {
	base, err := url.Parse(strings.TrimSuffix(ik.cfg.DiscoveryURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("discovery URL: %w", err)
	}
	jwksURL := base.JoinPath("/openid/v1/jwks")
	doc, status, err := ik.get(ctx, base.JoinPath("/.well-known/openid-configuration").String())
	switch {
	case err != nil:
		return nil, err
	case status == http.StatusOK:
		var d struct {
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.Unmarshal(doc, &d); err != nil {
			return nil, fmt.Errorf("discovery document: %w", err)
		}
		if d.JWKSURI != "" {
			u, err := url.Parse(d.JWKSURI)
			if err != nil {
				return nil, fmt.Errorf("discovery document: jwks_uri: %w", err)
			}
			// kube-apiserver names jwks_uri after the issuer, typically an
			// in-cluster host the emulator cannot resolve; the discovery URL
			// is the address that reaches the same server.
			if u.Host != base.Host {
				u.Scheme, u.Host = base.Scheme, base.Host
			}
			jwksURL = base.ResolveReference(u)
		}
	case status == http.StatusNotFound:
		// No discovery document: fall back to kube-apiserver's fixed path.
	default:
		return nil, fmt.Errorf("discovery document: HTTP %d", status)
	}
	keys, status, err := ik.get(ctx, jwksURL.String())
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("JWKS %s: HTTP %d", jwksURL.Redacted(), status)
	}
	return keys, nil
}

func (ik *issuerKeys) get(ctx context.Context, u string) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	// kube-apiserver serves /openid/v1/jwks only as application/jwk-set+json
	// and answers 406 to a client that accepts nothing but application/json.
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	if f := ik.cfg.DiscoveryBearerTokenFile; f != "" {
		tok, err := os.ReadFile(f)
		if err != nil {
			return nil, 0, fmt.Errorf("discovery bearer token file: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	client := ik.client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		// The URL error names the URL only; no header or token is in it.
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocBytes))
	if err != nil {
		return nil, 0, err
	}
	return body, resp.StatusCode, nil
}

// crIdentity is what a verified compute-resource token says about its bearer.
type crIdentity struct {
	issuer         config.Issuer
	namespace      string
	serviceAccount string
	pod            string
}

// identifier is IBM's name for the token in BXNIM0398E details.
func (c *crIdentity) identifier() string {
	return c.issuer.Cluster + ":" + c.namespace + ":" + c.serviceAccount + ":" + c.pod
}

type kubeRef struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

type crClaims struct {
	jwt.RegisteredClaims
	Kube *struct {
		Namespace      string   `json:"namespace"`
		ServiceAccount *kubeRef `json:"serviceaccount"`
		Pod            *kubeRef `json:"pod"`
	} `json:"kubernetes.io"`
}

// crTokenError is a refused token: Detail says why, without the token.
type crTokenError struct{ detail string }

func (e *crTokenError) Error() string { return e.detail }

func refuse(format string, args ...any) error { return &crTokenError{fmt.Sprintf(format, args...)} }

// verifyCRToken checks a compute-resource token: issuer, signature, time
// claims, audience, lifetime and the kubernetes.io claims. It returns a
// *crTokenError for a bad token and an errKeysUnavailable error when the
// issuer's keys could not be obtained.
func (s *Server) verifyCRToken(ctx context.Context, raw string, issuers map[string]*issuerKeys, now time.Time) (*crIdentity, error) {
	unverified, _, err := jwt.NewParser().ParseUnverified(raw, &crClaims{})
	if err != nil {
		return nil, refuse("The token is not a well-formed JWT.")
	}
	iss, _ := unverified.Claims.GetIssuer()
	ik, ok := issuers[iss]
	if !ok || iss == "" {
		return nil, refuse("The token's issuer is not trusted.")
	}
	kid, _ := unverified.Header["kid"].(string)
	keys, err := ik.candidates(ctx, kid, now, s.refetch)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, refuse("No signing key of the issuer matches the token.")
	}
	parser := jwt.NewParser(
		jwt.WithValidMethods(crAlgorithms),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithLeeway(crLeeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithIssuer(iss),
	)
	var claims *crClaims
	for _, k := range keys {
		c := &crClaims{}
		_, err = parser.ParseWithClaims(raw, c, func(t *jwt.Token) (any, error) {
			switch k.Key.(type) {
			case *rsa.PublicKey:
				if !strings.HasPrefix(t.Method.Alg(), "RS") {
					return nil, jwt.ErrTokenSignatureInvalid
				}
			case *ecdsa.PublicKey:
				if !strings.HasPrefix(t.Method.Alg(), "ES") {
					return nil, jwt.ErrTokenSignatureInvalid
				}
			}
			return k.Key, nil
		})
		if err == nil {
			claims = c
			break
		}
		if !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
			break // time or claim errors do not depend on the key
		}
	}
	switch {
	case claims != nil:
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, refuse("The token has expired.")
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return nil, refuse("The token is not valid yet.")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return nil, refuse("The token has no expiry.")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return nil, refuse("The token's signature is invalid.")
	default:
		return nil, refuse("The token is invalid.")
	}

	if !slices.ContainsFunc(claims.Audience, func(a string) bool { return slices.Contains(ik.cfg.Audiences, a) }) {
		return nil, refuse("The token's audience is not accepted; want one of: %s.", strings.Join(ik.cfg.Audiences, ", "))
	}
	if claims.IssuedAt == nil {
		return nil, refuse("The token has no iat claim.")
	}
	if life := claims.ExpiresAt.Sub(claims.IssuedAt.Time); life > maxCRLifetime {
		return nil, refuse("The token's lifetime of %ds exceeds the maximum of %ds.", int64(life/time.Second), int64(maxCRLifetime/time.Second))
	}
	kube := claims.Kube
	if kube == nil || kube.Namespace == "" || kube.ServiceAccount == nil || kube.ServiceAccount.Name == "" {
		return nil, refuse("The token has no kubernetes.io namespace and service account claims.")
	}
	id := &crIdentity{issuer: ik.cfg, namespace: kube.Namespace, serviceAccount: kube.ServiceAccount.Name}
	if kube.Pod != nil {
		id.pod = kube.Pod.Name
	}
	return id, nil
}
