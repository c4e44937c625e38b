package iamserver

import (
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/cosmount/cosmount/pkg/emulator/config"
)

// AccessTokenIssuer is the "iss" of the emulator's access tokens.
const AccessTokenIssuer = "https://iam.cosmount-emulator.local/identity"

// Errors of VerifyAccessToken. Every error it returns wraps exactly one.
var (
	// ErrAccessTokenExpired: the token was issued by this server but its exp has passed.
	ErrAccessTokenExpired = errors.New("iamserver: access token expired")
	// ErrAccessTokenInvalid: malformed, foreign signature, wrong issuer or
	// account, or its principal no longer exists in the configuration.
	ErrAccessTokenInvalid = errors.New("iamserver: access token invalid")
)

// accessClaims are the claims of the emulator's access tokens, modelled on
// IAM's: iam_id/sub/id name the principal, account.bss the account.
type accessClaims struct {
	jwt.RegisteredClaims
	IAMID         string `json:"iam_id"`
	ID            string `json:"id"`
	Name          string `json:"name,omitempty"`
	PrincipalType string `json:"principal_type"` // config.PrincipalType
	Account       struct {
		BSS string `json:"bss"`
	} `json:"account"`
	GrantType string `json:"grant_type"`
	Scope     string `json:"scope"`
}

// mint signs an access token for p valid from now for lifetime. exp is
// rounded up to the next whole second so a token never lives shorter than
// the configured lifetime (JWT times are whole seconds).
func (s *Server) mint(cfg *config.Config, p *config.Principal, grant string, now time.Time, lifetime time.Duration) (*tokenResponse, error) {
	exp := now.Add(lifetime)
	if exp.Truncate(time.Second) != exp {
		exp = exp.Truncate(time.Second).Add(time.Second)
	}
	c := accessClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    AccessTokenIssuer,
			Subject:   p.ID,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        newRequestID(),
		},
		IAMID:         p.ID,
		ID:            p.ID,
		Name:          p.Name,
		PrincipalType: string(p.Type),
		GrantType:     grant,
		Scope:         "ibm openid",
	}
	c.Account.BSS = cfg.AccountID
	tok, err := s.key.Sign(c)
	if err != nil {
		return nil, err
	}
	secs := int64((lifetime + time.Second - 1) / time.Second)
	return &tokenResponse{
		AccessToken:  tok,
		RefreshToken: "not_supported",
		IMSUserID:    imsUserID(p.ID),
		TokenType:    "Bearer",
		ExpiresIn:    secs,
		Expiration:   exp.Unix(),
		Scope:        "ibm openid",
	}, nil
}

// imsUserID derives a stable fake IMS user id from the principal id.
func imsUserID(id string) int64 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return 1_000_000 + int64(h.Sum32()%9_000_000)
}

// VerifyAccessToken checks an access token this server issued: its
// signature, its expiry against the server's clock, and that its principal
// still exists in the current configuration, whose policies the returned
// Principal carries (so a config reload changes permissions at once).
// Errors wrap ErrAccessTokenExpired or ErrAccessTokenInvalid and never
// contain the token.
func (s *Server) VerifyAccessToken(raw string) (*config.Principal, error) {
	now := s.clock()
	c := &accessClaims{}
	_, err := jwt.ParseWithClaims(raw, c, func(*jwt.Token) (any, error) { return s.key.Public(), nil },
		jwt.WithValidMethods([]string{"RS256"}),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithExpirationRequired(),
		jwt.WithIssuer(AccessTokenIssuer),
	)
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, ErrAccessTokenExpired
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return nil, fmt.Errorf("%w: signature", ErrAccessTokenInvalid)
	case errors.Is(err, jwt.ErrTokenMalformed):
		return nil, fmt.Errorf("%w: malformed", ErrAccessTokenInvalid)
	default:
		return nil, fmt.Errorf("%w: claims", ErrAccessTokenInvalid)
	}
	cfg, _, _ := s.snapshot()
	if c.Account.BSS != cfg.AccountID {
		return nil, fmt.Errorf("%w: account", ErrAccessTokenInvalid)
	}
	switch config.PrincipalType(c.PrincipalType) {
	case config.PrincipalProfile:
		for _, p := range cfg.Profiles {
			if p.ID == c.Subject {
				return &config.Principal{Type: config.PrincipalProfile, ID: p.ID, Name: p.Name, Policies: p.Policies}, nil
			}
		}
	case config.PrincipalAPIKey:
		for _, k := range cfg.APIKeys {
			if k.ID == c.Subject {
				return &config.Principal{Type: config.PrincipalAPIKey, ID: k.ID, Name: k.Name, Policies: k.Policies}, nil
			}
		}
	}
	return nil, fmt.Errorf("%w: principal %q not found", ErrAccessTokenInvalid, c.Subject)
}
