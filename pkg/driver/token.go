package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cosmount/cosmount/pkg/iam"
)

// podToken returns the pod's service-account token for audience. kubelet
// puts it into secrets (serviceAccountTokenInSecrets, Kubernetes 1.35+) or
// else into the volume context, as a JSON map audience -> {token, expirationTimestamp}.
//
// A missing token is FailedPrecondition: nothing was mounted, so the error is
// final for this call (kubelet does not have to assume a half-done mount, as
// it would for Unavailable or DeadlineExceeded) and kubelet retries the
// publish on its next reconcile, by which time the token may have been
// issued; if the CSIDriver lacks tokenRequests, the message says so.
// Errors never contain the token.
func podToken(secrets, volumeContext map[string]string, audience string) (string, error) {
	raw, ok := secrets[keyTokens]
	if !ok {
		raw, ok = volumeContext[keyTokens]
	}
	if !ok || raw == "" {
		return "", status.Errorf(codes.FailedPrecondition,
			"no service account token in the request (%s): the CSIDriver %s must request one with tokenRequests audience %q", keyTokens, Name, audience)
	}
	var tokens map[string]struct {
		Token               string `json:"token"`
		ExpirationTimestamp string `json:"expirationTimestamp"`
	}
	if err := json.Unmarshal([]byte(raw), &tokens); err != nil {
		// The JSON error could quote part of the token: report the key only.
		return "", status.Errorf(codes.InvalidArgument, "%s is not a JSON map of audience to token", keyTokens)
	}
	t, ok := tokens[audience]
	if !ok || strings.TrimSpace(t.Token) == "" {
		have := make([]string, 0, len(tokens))
		for a := range tokens {
			have = append(have, a)
		}
		sort.Strings(have)
		return "", status.Errorf(codes.FailedPrecondition,
			"no service account token for audience %q in %s (audiences present: %q): set tokenRequests audience %q in the CSIDriver %s", audience, keyTokens, have, audience, Name)
	}
	return t.Token, nil
}

// IdentityVerifier exchanges a publish's credentials at IAM once, so that a
// trusted profile refusing the pod fails the publish instead of the pod's
// first write. Implementations return iam errors (*iam.Error).
type IdentityVerifier interface {
	VerifyTrustedProfile(ctx context.Context, iamEndpoint string, profile iam.Profile, crToken string) error
	VerifyAPIKey(ctx context.Context, iamEndpoint, apiKey string) error
}

// IAMVerifier is the real IdentityVerifier: it performs the grant with a
// pkg/iam client per IAM endpoint and throws the access token away.
type IAMVerifier struct {
	mu      sync.Mutex
	clients map[string]*iam.Client
}

// NewIAMVerifier returns an IAMVerifier.
func NewIAMVerifier() *IAMVerifier { return &IAMVerifier{clients: map[string]*iam.Client{}} }

func (v *IAMVerifier) client(endpoint string) (*iam.Client, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if c, ok := v.clients[endpoint]; ok {
		return c, nil
	}
	c, err := iam.NewClient(iam.ClientOptions{BaseURL: endpoint})
	if err != nil {
		return nil, err
	}
	v.clients[endpoint] = c
	return c, nil
}

// VerifyTrustedProfile performs the cr-token grant.
func (v *IAMVerifier) VerifyTrustedProfile(ctx context.Context, endpoint string, profile iam.Profile, crToken string) error {
	c, err := v.client(endpoint)
	if err != nil {
		return err
	}
	_, err = c.ExchangeCRToken(ctx, iam.CRTokenRequest{CRToken: strings.TrimSpace(crToken), Profile: profile})
	return err
}

// VerifyAPIKey performs the apikey grant.
func (v *IAMVerifier) VerifyAPIKey(ctx context.Context, endpoint, apiKey string) error {
	c, err := v.client(endpoint)
	if err != nil {
		return err
	}
	_, err = c.ExchangeAPIKey(ctx, strings.TrimSpace(apiKey))
	return err
}

// verifyError turns a failed exchange into the publish's answer: IAM's
// refusal is PermissionDenied with IAM's code and details (they name the
// token as cluster:namespace:serviceaccount:pod, never its content), an
// outage is Unavailable so kubelet retries.
func verifyError(what string, err error) error {
	switch {
	case errors.Is(err, iam.ErrNotEligible), errors.Is(err, iam.ErrBadCredentials):
		return status.Errorf(codes.PermissionDenied, "IAM refused %s: %v", what, err)
	case errors.Is(err, iam.ErrTransient):
		return status.Errorf(codes.Unavailable, "IAM unavailable while exchanging %s: %v", what, err)
	case errors.Is(err, iam.ErrUnexpected):
		return status.Errorf(codes.FailedPrecondition, "unexpected IAM answer while exchanging %s (is the IAM endpoint right?): %v", what, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return err
	}
	return fmt.Errorf("exchange %s at IAM: %w", what, err)
}
