package driver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/iam"
)

// COSStores is the real StoreFactory: a pkg/cos client per endpoint and
// identity, authenticated with the controller's trusted profile (its own
// projected token file) or the provisioner secret's API key. Clients are
// kept so their cached IAM tokens are reused across RPCs.
type COSStores struct {
	iamEndpoint string
	tokenFile   string
	profile     iam.Profile
	hasProfile  bool

	mu      sync.Mutex
	clients map[string]*cos.Client
}

// NewCOSStores configures the factory from the plugin's options.
func NewCOSStores(opts Options) *COSStores {
	s := &COSStores{iamEndpoint: opts.IAMEndpoint, tokenFile: opts.ControllerTokenFile, clients: map[string]*cos.Client{}}
	if opts.ControllerProfile != "" {
		s.profile, s.hasProfile = opts.controllerProfile(), true
	}
	return s
}

// Store returns the client for cfg.
func (s *COSStores) Store(ctx context.Context, cfg StoreConfig) (ObjectStore, error) {
	keySum := ""
	if cfg.APIKey != "" {
		sum := sha256.Sum256([]byte(cfg.APIKey))
		keySum = hex.EncodeToString(sum[:])
	}
	cacheKey := cfg.Endpoint + "\x00" + cfg.Region + "\x00" + cfg.ServiceInstanceID + "\x00" + keySum
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[cacheKey]; ok {
		return c, nil
	}
	exchanger, err := iam.NewClient(iam.ClientOptions{BaseURL: s.iamEndpoint})
	if err != nil {
		return nil, err
	}
	var raw iam.Source
	switch {
	case cfg.APIKey != "":
		raw, err = iam.NewAPIKeySource(exchanger, cfg.APIKey)
	case s.hasProfile:
		raw, err = iam.NewTrustedProfileSource(iam.TrustedProfileOptions{Exchanger: exchanger, TokenFile: s.tokenFile, Profile: s.profile})
	default:
		return nil, status.Errorf(codes.FailedPrecondition,
			"the controller has no identity for COS: start it with --controller-trusted-profile, or give the StorageClass a provisioner secret with %q", secretAPIKey)
	}
	if err != nil {
		return nil, err
	}
	c, err := cos.New(cos.Options{
		Endpoint:          cfg.Endpoint,
		Region:            cfg.Region,
		UsePathStyle:      true, // works for every endpoint, including loopback emulators
		Tokens:            iam.NewCachingSource(raw, iam.CachingOptions{}),
		ServiceInstanceID: cfg.ServiceInstanceID,
	})
	if err != nil {
		return nil, err
	}
	s.clients[cacheKey] = c
	return c, nil
}
