// Package emulator composes the local IBM Cloud stand-in that cosmount's
// demo, tests and users without a cloud account run against: the IAM token
// service (iamserver), the COS S3 endpoint (cosserver) over the embedded
// object store (store), the audit log and fault injection, plus a small admin
// API for out-of-process tests. It also owns the embedded default
// configuration. The subpackages own the protocols; this package owns the
// wiring, the data directory layout and the lifecycle.
package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/emulator/audit"
	"github.com/cosmount/cosmount/pkg/emulator/config"
	"github.com/cosmount/cosmount/pkg/emulator/cosserver"
	"github.com/cosmount/cosmount/pkg/emulator/faults"
	"github.com/cosmount/cosmount/pkg/emulator/iamserver"
	"github.com/cosmount/cosmount/pkg/emulator/satoken"
	"github.com/cosmount/cosmount/pkg/emulator/store"
)

// BucketSpec is a bucket created when the emulator starts (if missing).
type BucketSpec struct {
	Name               string
	LocationConstraint string // default "<config location>-standard"
	ServiceInstance    string // default the first configured service instance
}

// Options configure an Emulator.
type Options struct {
	// DataDir holds everything the emulator persists: objects, the access
	// token signing key, the built-in issuer key. Required.
	DataDir string
	// Buckets are created at start when they do not exist yet.
	Buckets []BucketSpec
	// Backend makes the COS side a front for an external S3 server; the
	// embedded store is then not used and Buckets must be empty.
	Backend *cosserver.Backend
	// AuditFile, when set, receives every audit entry as a JSON line (appended).
	AuditFile string
	// AuditWriter, when set, receives every audit entry as a JSON line.
	// Ignored when AuditFile is set.
	AuditWriter io.Writer
	// Clock is the time source of IAM and COS (default time.Now).
	Clock func() time.Time
	// Domain enables virtual-host style bucket addressing on the COS side.
	Domain string
	// MinPartSize lowers the store's multipart minimum part size (0: 5 MiB)
	// so tests can exercise multipart with small files.
	MinPartSize int64
	// NoSync skips fsync in the store: faster, survives a crash of the
	// process but not of the machine. For tests.
	NoSync bool
	// HTTPClient fetches issuer discovery documents (default http.DefaultClient).
	HTTPClient *http.Client
	// LifecycleDay is the length of a day in bucket lifecycle rules
	// (default 24h); tests shorten it to see the rules applied.
	LifecycleDay time.Duration
}

// Emulator is a composed IAM + COS endpoint.
type Emulator struct {
	cfgMu     sync.RWMutex
	cfg       *config.Config // guarded by cfgMu; replaced whole, never changed in place
	dataDir   string
	store     *store.Store
	iam       *iamserver.Server
	cos       *cosserver.Server
	audit     *audit.Log
	auditFile *os.File
	iamFaults *faults.Injector
	cosFaults *faults.Injector
	issuer    *satoken.Key

	iamHandler http.Handler
	cosHandler http.Handler
}

// Layout of the data directory.
const (
	storeDir       = "store"
	signingKeyFile = "iam-signing-key.pem"
)

// New builds an emulator from a validated configuration. The caller must
// Close it.
func New(cfg *config.Config, opts Options) (e *Emulator, err error) {
	if cfg == nil {
		return nil, errors.New("emulator: no configuration")
	}
	if opts.DataDir == "" {
		return nil, errors.New("emulator: Options.DataDir is required")
	}
	if opts.Backend != nil && len(opts.Buckets) > 0 {
		return nil, errors.New("emulator: with a backend, create buckets on the backend, not through Options.Buckets")
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("emulator: data dir: %w", err)
	}
	e = &Emulator{cfg: cfg, dataDir: opts.DataDir}
	defer func() {
		if err != nil {
			_ = e.Close()
		}
	}()

	// The built-in issuer key must exist before IAM reads the JWKS that
	// configurations name with ${DATA_DIR}/issuer/jwks.json.
	if e.issuer, err = EnsureIssuerKey(opts.DataDir); err != nil {
		return nil, err
	}

	auditOut := opts.AuditWriter
	if opts.AuditFile != "" {
		if e.auditFile, err = os.OpenFile(opts.AuditFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err != nil {
			return nil, fmt.Errorf("emulator: audit file: %w", err)
		}
		auditOut = e.auditFile
	}
	e.audit = audit.NewLog(auditOut, 0)

	if e.iam, err = iamserver.New(cfg, iamserver.Options{
		Clock:      opts.Clock,
		KeyFile:    filepath.Join(opts.DataDir, signingKeyFile),
		HTTPClient: opts.HTTPClient,
	}); err != nil {
		return nil, fmt.Errorf("emulator: iam: %w", err)
	}

	cosOpts := cosserver.Options{
		Verifier: e.iam,
		Config:   e.Config,
		Clock:    opts.Clock,
		Domain:   opts.Domain,
		Backend:  opts.Backend,

		LifecycleDay: opts.LifecycleDay,
	}
	if opts.Backend == nil {
		if e.store, err = store.OpenWithOptions(filepath.Join(opts.DataDir, storeDir), store.Options{MinPartSize: opts.MinPartSize, NoSync: opts.NoSync}); err != nil {
			return nil, fmt.Errorf("emulator: store: %w", err)
		}
		cosOpts.Storage = e.store
		if err := e.createBuckets(opts.Buckets); err != nil {
			return nil, err
		}
	}
	if e.cos, err = cosserver.New(cosOpts); err != nil {
		return nil, fmt.Errorf("emulator: cos: %w", err)
	}

	e.iamFaults = faults.New(faults.Options{Style: faults.StyleIAM, Classify: faults.IAMClassifier, Clock: opts.Clock, Name: "iam"})
	e.cosFaults = faults.New(faults.Options{Style: faults.StyleS3, Classify: faults.S3Classifier(opts.Domain), Clock: opts.Clock, Name: "cos"})
	// Audit outside faults, so that faulted requests are recorded as such.
	e.iamHandler = e.audit.Middleware("iam", e.iamFaults.Middleware(e.iam))
	mux := http.NewServeMux()
	mux.Handle(AdminPrefix, e.adminHandler())
	mux.Handle("/", e.audit.Middleware("cos", e.cosFaults.Middleware(e.cos)))
	e.cosHandler = mux
	return e, nil
}

func (e *Emulator) createBuckets(specs []BucketSpec) error {
	for _, b := range specs {
		if b.LocationConstraint == "" {
			b.LocationConstraint = e.cfg.Location + "-standard"
		}
		if b.ServiceInstance == "" && len(e.cfg.ServiceInstances) > 0 {
			b.ServiceInstance = e.cfg.ServiceInstances[0].ID
		}
		err := e.store.CreateBucket(b.Name, b.LocationConstraint, b.ServiceInstance)
		if err != nil && !errors.Is(err, store.ErrBucketExists) {
			return fmt.Errorf("emulator: bucket %s: %w", b.Name, err)
		}
		if err == nil {
			klog.InfoS("Created bucket", "bucket", b.Name, "locationConstraint", b.LocationConstraint, "serviceInstance", b.ServiceInstance)
		}
	}
	return nil
}

// IAMHandler serves the IAM token service (/identity/token, /identity/keys).
func (e *Emulator) IAMHandler() http.Handler { return e.iamHandler }

// COSHandler serves the COS S3 API, and the admin API under AdminPrefix.
func (e *Emulator) COSHandler() http.Handler { return e.cosHandler }

// Audit is the log of every request served.
func (e *Emulator) Audit() *audit.Log { return e.audit }

// IAMFaults controls fault injection on the IAM side.
func (e *Emulator) IAMFaults() *faults.Injector { return e.iamFaults }

// COSFaults controls fault injection on the COS side.
func (e *Emulator) COSFaults() *faults.Injector { return e.cosFaults }

// Config is the configuration the emulator runs with.
func (e *Emulator) Config() *config.Config {
	e.cfgMu.RLock()
	defer e.cfgMu.RUnlock()
	return e.cfg
}

// UpdateConfig changes the running configuration: change gets a deep copy
// of it (add an API key, revoke an HMAC key, ...), which replaces it on both
// sides once it is valid. Requests already being served keep the old one.
// The access-token lifetime in force is kept.
func (e *Emulator) UpdateConfig(change func(*config.Config)) error {
	e.cfgMu.Lock()
	defer e.cfgMu.Unlock()
	b, err := json.Marshal(e.cfg)
	if err != nil {
		return fmt.Errorf("emulator: copy config: %w", err)
	}
	next := &config.Config{}
	if err := json.Unmarshal(b, next); err != nil {
		return fmt.Errorf("emulator: copy config: %w", err)
	}
	change(next)
	lifetime := e.iam.AccessTokenLifetime()
	if err := e.iam.SetConfig(next); err != nil {
		return err
	}
	e.iam.SetAccessTokenLifetime(lifetime)
	e.cfg = next
	return nil
}

// IAM is the token service, for tests that verify tokens or change their lifetime.
func (e *Emulator) IAM() *iamserver.Server { return e.iam }

// Store is the embedded object store (nil in backend mode).
func (e *Emulator) Store() *store.Store { return e.store }

// IssuerKey is the built-in issuer's signing key (kept in the data directory),
// with which tests and tools mint pod service-account tokens.
func (e *Emulator) IssuerKey() *satoken.Key { return e.issuer }

// SetAccessTokenLifetime changes the lifetime of access tokens issued from now on.
func (e *Emulator) SetAccessTokenLifetime(d time.Duration) { e.iam.SetAccessTokenLifetime(d) }

// Close releases the store and the audit file. Serve must have returned.
func (e *Emulator) Close() error {
	var errs []error
	if e.store != nil {
		errs = append(errs, e.store.Close())
		e.store = nil
	}
	if e.auditFile != nil {
		errs = append(errs, e.auditFile.Close())
		e.auditFile = nil
	}
	return errors.Join(errs...)
}

// Serve serves IAM on iamL and COS on cosL until ctx is done, then shuts both
// servers down gracefully (in-flight requests get a few seconds). It returns
// nil after a shutdown caused by ctx, or the error that stopped a server.
func (e *Emulator) Serve(ctx context.Context, iamL, cosL net.Listener) error {
	servers := []*http.Server{
		{Handler: e.iamHandler, ReadHeaderTimeout: 30 * time.Second},
		{Handler: e.cosHandler, ReadHeaderTimeout: 30 * time.Second},
	}
	listeners := []net.Listener{iamL, cosL}
	errc := make(chan error, len(servers))
	for i, s := range servers {
		go func() { errc <- s.Serve(listeners[i]) }()
	}
	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		if err := s.Shutdown(sctx); err != nil {
			_ = s.Close()
		}
	}
	if errors.Is(first, http.ErrServerClosed) {
		first = nil
	}
	return first
}
