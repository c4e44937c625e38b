// Package iamserver owns the emulator's IBM Cloud IAM side: the
// /identity/token endpoint (trusted-profile cr-token grant and API-key grant,
// with IBM's error envelope and codes), verification of Kubernetes
// service-account tokens against their issuers' keys, trust decisions from
// the profiles' links and claim rules, and the access tokens it signs, which
// the COS side checks with VerifyAccessToken.
//
// Nothing in this package logs or puts into a response a token, API key or key.
package iamserver

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/audit"
	"github.com/cosmount/cosmount/pkg/emulator/config"
	"github.com/cosmount/cosmount/pkg/emulator/satoken"
)

// Paths served by the handler.
const (
	TokenPath = "/identity/token"
	KeysPath  = "/identity/keys"
)

// DefaultJWKSRefetchInterval is the least time between two fetches of an
// issuer's keys triggered by tokens with an unknown kid, so that a client
// sending garbage kids cannot make the emulator hammer the issuer.
const DefaultJWKSRefetchInterval = 10 * time.Second

// Options are the Server's dependencies. Every field is optional.
type Options struct {
	// Clock is the time source for token validity (default time.Now).
	Clock func() time.Time
	// HTTPClient fetches issuers' discovery documents and key sets. Default:
	// a client per issuer honouring its DiscoveryCAFile and InsecureSkipTLSVerify.
	HTTPClient *http.Client
	// SigningKey signs access tokens; it must be an RS256 key. When nil, the
	// key is loaded from KeyFile, or generated (and saved to KeyFile if set),
	// so that a restarted emulator keeps accepting the tokens it issued.
	SigningKey *satoken.Key
	KeyFile    string
	// JWKSRefetchInterval overrides DefaultJWKSRefetchInterval.
	JWKSRefetchInterval time.Duration
	// Host is reported as context.host in error envelopes (default: the hostname).
	Host string
}

// Server is the IAM endpoint. It is an http.Handler serving TokenPath and
// KeysPath; every method is safe for concurrent use.
type Server struct {
	clock      func() time.Time
	key        *satoken.Key
	httpClient *http.Client
	refetch    time.Duration
	host       string
	instanceID string
	// threads numbers requests for context.threadId: IAM reports a worker
	// thread there, which the emulator does not have.
	threads atomic.Uint64

	mu       sync.RWMutex
	cfg      *config.Config
	lifetime time.Duration
	issuers  map[string]*issuerKeys // by the "iss" value
}

// New builds a Server for cfg. It validates cfg (filling in defaults, as
// config.Load does) and takes ownership of it: the caller must not change it
// afterwards; use SetConfig to replace it.
func New(cfg *config.Config, opts Options) (*Server, error) {
	s := &Server{
		clock:      opts.Clock,
		httpClient: opts.HTTPClient,
		refetch:    opts.JWKSRefetchInterval,
		host:       opts.Host,
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.refetch <= 0 {
		s.refetch = DefaultJWKSRefetchInterval
	}
	if s.host == "" {
		if h, err := os.Hostname(); err == nil {
			s.host = h
		} else {
			s.host = "cosmount-emulator"
		}
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("iamserver: %w", err)
	}
	s.instanceID = "iam-emulator-" + hex.EncodeToString(b[:])

	key, err := signingKey(opts)
	if err != nil {
		return nil, err
	}
	s.key = key
	if err := s.SetConfig(cfg); err != nil {
		return nil, err
	}
	return s, nil
}

func signingKey(opts Options) (*satoken.Key, error) {
	key := opts.SigningKey
	switch {
	case key != nil:
	case opts.KeyFile != "":
		k, err := satoken.Load(opts.KeyFile)
		switch {
		case err == nil:
			key = k
		case errors.Is(err, os.ErrNotExist):
			if key, err = satoken.GenerateKey(); err != nil {
				return nil, fmt.Errorf("iamserver: %w", err)
			}
			if err := key.Save(opts.KeyFile); err != nil {
				return nil, fmt.Errorf("iamserver: %w", err)
			}
		default:
			return nil, fmt.Errorf("iamserver: %w", err)
		}
	default:
		k, err := satoken.GenerateKey()
		if err != nil {
			return nil, fmt.Errorf("iamserver: %w", err)
		}
		key = k
	}
	if key.Algorithm() != "RS256" {
		return nil, fmt.Errorf("iamserver: access tokens are RS256; signing key signs %s", key.Algorithm())
	}
	return key, nil
}

// SetConfig replaces the configuration (profiles, API keys, issuers, token
// lifetime) at runtime. It validates cfg and takes ownership of it. Issuers
// whose key source did not change keep their cached keys. The access-token
// lifetime becomes cfg's, overriding an earlier SetAccessTokenLifetime.
func (s *Server) SetConfig(cfg *config.Config) error {
	if cfg == nil {
		return errors.New("iamserver: nil config")
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("iamserver: %w", err)
	}
	if err := checkTrust(cfg); err != nil {
		return fmt.Errorf("iamserver: %w", err)
	}
	s.mu.RLock()
	old := s.issuers
	s.mu.RUnlock()
	issuers := make(map[string]*issuerKeys, len(cfg.Issuers))
	for _, is := range cfg.Issuers {
		if _, dup := issuers[is.Issuer]; dup {
			return fmt.Errorf("iamserver: issuer %q is configured twice", is.Issuer)
		}
		if prev, ok := old[is.Issuer]; ok && prev.sameSource(is) {
			issuers[is.Issuer] = prev.withConfig(is)
			continue
		}
		client, err := s.discoveryClient(is)
		if err != nil {
			return fmt.Errorf("iamserver: issuer %s: %w", is.Cluster, err)
		}
		issuers[is.Issuer] = &issuerKeys{state: &keyState{}, cfg: is, client: client}
	}
	s.mu.Lock()
	s.cfg, s.issuers, s.lifetime = cfg, issuers, cfg.AccessTokenLifetime.Duration
	s.mu.Unlock()
	return nil
}

// SetAccessTokenLifetime changes the lifetime of access tokens issued from
// now on (tests shorten it to exercise refresh). Values under 1 s become 1 s.
func (s *Server) SetAccessTokenLifetime(d time.Duration) {
	d = max(d, time.Second)
	s.mu.Lock()
	s.lifetime = d
	s.mu.Unlock()
}

// AccessTokenLifetime returns the lifetime of access tokens issued now.
func (s *Server) AccessTokenLifetime() time.Duration {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lifetime
}

// JWKS returns the public key set that verifies this server's access tokens.
func (s *Server) JWKS() []byte { return s.key.JWKS() }

func (s *Server) snapshot() (*config.Config, map[string]*issuerKeys, time.Duration) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cfg, s.issuers, s.lifetime
}

func (s *Server) discoveryClient(is config.Issuer) (*http.Client, error) {
	if s.httpClient != nil || is.DiscoveryURL == "" {
		return s.httpClient, nil
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tc := &tls.Config{InsecureSkipVerify: is.InsecureSkipTLSVerify} //nolint:gosec // opt-in, for tests
	if is.DiscoveryCAFile != "" {
		pem, err := os.ReadFile(is.DiscoveryCAFile)
		if err != nil {
			return nil, fmt.Errorf("discovery CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("discovery CA %s: no certificate found", is.DiscoveryCAFile)
		}
		tc.RootCAs = pool
	}
	tr.TLSClientConfig = tc
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}, nil
}

// ServeHTTP serves TokenPath and KeysPath.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch strings.TrimSuffix(r.URL.Path, "/") {
	case TokenPath:
		s.serveToken(w, r)
	case KeysPath:
		s.serveKeys(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) serveKeys(w http.ResponseWriter, r *http.Request) {
	rec := audit.From(r.Context())
	rec.SetOperation("Keys", "", "")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.writeError(w, r, s.clock(), methodNotAllowed(r.Method, "GET"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("ibm-cloud-service-name", "iam-identity")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(s.key.JWKS())
	}
}

// Operators and claims of Profile-CR rules (PROTOCOLS.md section 2).
var (
	ruleOperators = []string{"EQUALS", "NOT_EQUALS", "EQUALS_IGNORE_CASE", "NOT_EQUALS_IGNORE_CASE", "CONTAINS", "IN"}
	ruleClaims    = []string{"service_instance", "namespace", "name", "pod", "resource_group_id", "resource_group_name", "location"}
)

// checkTrust rejects trust settings the handler could not evaluate, so that
// a typo in a rule fails at start instead of silently refusing every pod.
func checkTrust(cfg *config.Config) error {
	for i, p := range cfg.Profiles {
		for j, l := range p.Links {
			if l.CRType != "IKS_SA" && l.CRType != "ROKS_SA" {
				return fmt.Errorf("profiles[%d].links[%d]: crType %q: want IKS_SA or ROKS_SA", i, j, l.CRType)
			}
			if l.Cluster == "" || l.Namespace == "" || l.ServiceAccount == "" {
				return fmt.Errorf("profiles[%d].links[%d]: cluster, namespace and serviceAccount are required", i, j)
			}
		}
		for j, r := range p.Rules {
			if len(r.Conditions) == 0 {
				return fmt.Errorf("profiles[%d].rules[%d]: a rule needs at least one condition", i, j)
			}
			for k, c := range r.Conditions {
				if !slices.Contains(ruleOperators, c.Operator) {
					return fmt.Errorf("profiles[%d].rules[%d].conditions[%d]: operator %q: want one of %s", i, j, k, c.Operator, strings.Join(ruleOperators, ", "))
				}
				if !slices.Contains(ruleClaims, c.Claim) {
					return fmt.Errorf("profiles[%d].rules[%d].conditions[%d]: claim %q: want one of %s", i, j, k, c.Claim, strings.Join(ruleClaims, ", "))
				}
			}
		}
	}
	return nil
}
