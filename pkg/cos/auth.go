package cos

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithy "github.com/aws/smithy-go"
	smithyauth "github.com/aws/smithy-go/auth"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/cosmount/cosmount/pkg/iam"
)

// bearerSchemeID is smithy's identifier for HTTP bearer authentication.
const bearerSchemeID = smithyauth.SchemeIDHTTPBearer

// bearerScheme is a real smithy auth scheme, so the SDK resolves an identity
// and signs every attempt of every operation through it. The resolver below
// offers only this scheme: a request that cannot get a token fails instead of
// going out anonymously.
type bearerScheme struct {
	resolver *tokenIdentityResolver
}

var _ smithyhttp.AuthScheme = (*bearerScheme)(nil)

func (s *bearerScheme) SchemeID() string { return bearerSchemeID }

func (s *bearerScheme) IdentityResolver(smithyauth.IdentityResolverOptions) smithyauth.IdentityResolver {
	return s.resolver
}

func (s *bearerScheme) Signer() smithyhttp.Signer { return bearerSigner{} }

// tokenIdentity carries an IAM access token through the SDK's middleware.
// It deliberately has no String method; nothing should ever format it.
type tokenIdentity struct {
	token  string
	expiry time.Time
}

func (t *tokenIdentity) Expiration() time.Time { return t.expiry }

// tokenIdentityResolver asks the iam.Source on every attempt, so a retry
// after a refresh (or after Invalidate) carries the new token.
type tokenIdentityResolver struct {
	src iam.Source
}

func (r *tokenIdentityResolver) GetIdentity(ctx context.Context, _ smithy.Properties) (smithyauth.Identity, error) {
	tok, err := r.src.Token(ctx)
	if err != nil {
		return nil, &tokenError{err: err}
	}
	if tok.AccessToken == "" {
		return nil, &tokenError{err: errors.New("token source returned an empty access token")}
	}
	if u, ok := ctx.Value(usedTokenKey{}).(*usedToken); ok {
		u.set(tok.AccessToken)
	}
	return &tokenIdentity{token: tok.AccessToken, expiry: tok.Expiry}, nil
}

// usedToken records, for one client call, the token its latest attempt
// carried, so that a 403 invalidates exactly that token (see Client.attempt).
type usedToken struct {
	mu    sync.Mutex
	token string
}

type usedTokenKey struct{}

func (u *usedToken) set(tok string) {
	u.mu.Lock()
	u.token = tok
	u.mu.Unlock()
}

func (u *usedToken) get() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.token
}

// tokenInvalidator is implemented by sources (iam.CachingSource) that can
// drop a token only if it is still the cached one. When many parallel
// requests are refused with one token, only the first then forces an
// exchange, and the others do not throw away the token it brought.
type tokenInvalidator interface {
	InvalidateToken(accessToken string)
}

// tokenError marks a failure to obtain a credential (a bearer token, HMAC
// keys), so the error mapper reports ErrNoCredentials rather than a COS
// failure.
type tokenError struct {
	what string // default "get access token"
	err  error
}

func (e *tokenError) Error() string {
	what := e.what
	if what == "" {
		what = "get access token"
	}
	return what + ": " + e.err.Error()
}
func (e *tokenError) Unwrap() error { return e.err }

// bearerSigner sets the Authorization header. smithy-go's own bearer signer
// refuses plain http; cosmount talks http to the local emulator, and the
// endpoint's scheme is the operator's choice, so this one does not.
type bearerSigner struct{}

func (bearerSigner) SignRequest(_ context.Context, req *smithyhttp.Request, id smithyauth.Identity, _ smithy.Properties) error {
	t, ok := id.(*tokenIdentity)
	if !ok {
		return fmt.Errorf("bearer signer: unexpected identity type %T", id)
	}
	req.Header.Set("Authorization", "Bearer "+t.token)
	return nil
}

// onlyScheme is an AuthSchemeResolver that always answers with one scheme,
// which keeps the SDK from falling back to anonymous requests.
type onlyScheme struct {
	option func(params *s3.AuthResolverParameters) *smithyauth.Option
}

func (o onlyScheme) ResolveAuthSchemes(_ context.Context, params *s3.AuthResolverParameters) ([]*smithyauth.Option, error) {
	return []*smithyauth.Option{o.option(params)}, nil
}

func bearerOption(*s3.AuthResolverParameters) *smithyauth.Option {
	return &smithyauth.Option{SchemeID: bearerSchemeID}
}

func sigV4Option(params *s3.AuthResolverParameters) *smithyauth.Option {
	var props smithy.Properties
	smithyhttp.SetSigV4SigningName(&props, "s3")
	smithyhttp.SetSigV4SigningRegion(&props, params.Region)
	smithyhttp.SetIsUnsignedPayload(&props, true)
	return &smithyauth.Option{SchemeID: smithyauth.SchemeIDSigV4, SignerProperties: props}
}
