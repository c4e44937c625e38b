// Package emulatortest starts a cosmount emulator (IBM IAM + COS) inside a
// test: two loopback httptest listeners, the embedded default configuration,
// data in t.TempDir(), everything torn down by t.Cleanup. It is the shared
// fixture of every test above unit level (pkg/cos, pkg/fs, pkg/driver).
//
// Fixtures of the default configuration: trusted profile Profile-writer
// (name cosmount-writer, Manager) trusting namespace "default", service
// account "default" of cluster test-cluster; Profile-reader (cosmount-reader,
// Reader) trusting namespace "readers", service account "default"; API key
// ApiKey-test (Manager); HMAC key test-access-key (Manager); service instance
// ServiceInstanceID; bucket Bucket ("test-bucket", us-south-standard).
package emulatortest

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator"
	"github.com/cosmount/cosmount/pkg/emulator/audit"
	"github.com/cosmount/cosmount/pkg/emulator/config"
	"github.com/cosmount/cosmount/pkg/emulator/faults"
	"github.com/cosmount/cosmount/pkg/emulator/satoken"
)

// Fixture names of the default configuration.
const (
	Bucket            = emulator.DefaultBucket
	ServiceInstanceID = emulator.DefaultServiceInstanceID
	WriterProfileID   = emulator.DefaultWriterProfileID
	WriterProfileName = emulator.DefaultWriterProfileName
	ReaderProfileID   = emulator.DefaultReaderProfileID
	ReaderProfileName = emulator.DefaultReaderProfileName
	APIKeyID          = emulator.DefaultAPIKeyID
	Cluster           = emulator.DefaultCluster
)

// Env is a running emulator.
type Env struct {
	// IAMURL is the IAM base URL (token endpoint at IAMURL + "/identity/token").
	IAMURL string
	// COSURL is the COS endpoint (path-style).
	COSURL string
	// ServiceInstanceID is the COS service instance of the default bucket.
	ServiceInstanceID string
	// Bucket is the bucket that exists at start.
	Bucket string
	// DataDir holds the emulator's data.
	DataDir string
	// Emulator is the running emulator (replaced by Restart).
	Emulator *emulator.Emulator

	opts     settings
	iamSrv   *httptest.Server
	cosSrv   *httptest.Server
	stopped  bool
	tokenIss string
}

type settings struct {
	tweak       []func(*config.Config)
	minPartSize int64
	buckets     []emulator.BucketSpec
	clock       func() time.Time
	day         time.Duration
}

// Option changes how Start sets the emulator up.
type Option func(*settings)

// WithConfig lets a test change the default configuration (add profiles,
// change policies, ...) before the emulator starts.
func WithConfig(f func(*config.Config)) Option {
	return func(s *settings) { s.tweak = append(s.tweak, f) }
}

// WithMinPartSize lowers the multipart minimum part size (default 5 MiB) so
// multipart paths can be exercised with small files.
func WithMinPartSize(n int64) Option { return func(s *settings) { s.minPartSize = n } }

// WithBuckets creates more buckets at start, in the default service instance.
func WithBuckets(names ...string) Option {
	return func(s *settings) {
		for _, n := range names {
			s.buckets = append(s.buckets, emulator.BucketSpec{Name: n, ServiceInstance: ServiceInstanceID})
		}
	}
}

// WithClock gives IAM and COS a time source (default time.Now), for tests of
// token expiry. MintPodToken uses it too.
func WithClock(now func() time.Time) Option { return func(s *settings) { s.clock = now } }

// WithLifecycleDay sets the length of a day in bucket lifecycle rules, so a
// test sees an AbortIncompleteMultipartUpload rule of one day applied after d.
func WithLifecycleDay(d time.Duration) Option { return func(s *settings) { s.day = d } }

// Start runs an emulator until the test ends.
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	var s settings
	for _, o := range opts {
		o(&s)
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	env := &Env{
		ServiceInstanceID: ServiceInstanceID,
		Bucket:            Bucket,
		DataDir:           t.TempDir(),
		opts:              s,
	}
	env.start(t, "", "")
	t.Cleanup(env.stop)
	return env
}

// start builds the emulator and serves it, on the given addresses if not empty.
func (e *Env) start(t testing.TB, iamAddr, cosAddr string) {
	t.Helper()
	cfg, err := emulator.DefaultConfig(e.DataDir)
	if err != nil {
		t.Fatalf("emulatortest: default config: %v", err)
	}
	for _, f := range e.opts.tweak {
		f(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("emulatortest: config after WithConfig: %v", err)
	}
	e.tokenIss = emulator.DefaultIssuer
	for _, is := range cfg.Issuers {
		if is.JWKSFile == emulator.IssuerJWKSFile(e.DataDir) {
			e.tokenIss = is.Issuer
			break
		}
	}
	em, err := emulator.New(cfg, emulator.Options{
		DataDir:     e.DataDir,
		Buckets:     append(emulator.DefaultBuckets(), e.opts.buckets...),
		Clock:       e.opts.clock,
		MinPartSize: e.opts.minPartSize,
		NoSync:      true,

		LifecycleDay: e.opts.day,
	})
	if err != nil {
		t.Fatalf("emulatortest: %v", err)
	}
	e.Emulator = em
	e.iamSrv = serve(t, em.IAMHandler(), iamAddr)
	e.cosSrv = serve(t, em.COSHandler(), cosAddr)
	e.IAMURL, e.COSURL = e.iamSrv.URL, e.cosSrv.URL
	e.stopped = false
}

func serve(t testing.TB, h http.Handler, addr string) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	if addr != "" {
		// Restart: listen where the clients already point. The old listener is
		// closed, and Go sets SO_REUSEADDR, so the port is free again unless
		// another process grabbed it in between (then the test fails clearly).
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("emulatortest: listen again on %s: %v", addr, err)
		}
		_ = srv.Listener.Close()
		srv.Listener = l
	}
	srv.Start()
	return srv
}

func (e *Env) stop() {
	if e.stopped {
		return
	}
	e.stopped = true
	e.iamSrv.Close()
	e.cosSrv.Close()
	_ = e.Emulator.Close()
}

// Restart stops the emulator and starts a new one on the same data directory
// and the same URLs, as a restarted emulator process would be: objects,
// buckets and the signing keys survive; audit log and faults do not.
func (e *Env) Restart(t testing.TB) {
	t.Helper()
	iamAddr, cosAddr := e.iamSrv.Listener.Addr().String(), e.cosSrv.Listener.Addr().String()
	e.stop()
	e.start(t, iamAddr, cosAddr)
}

// MintPodToken returns a projected service-account token (audience "iam") of
// the built-in issuer for a pod, as kubelet would hand it to the CSI driver.
func (e *Env) MintPodToken(t testing.TB, namespace, serviceAccount, pod string, lifetime time.Duration) string {
	t.Helper()
	tok, err := e.Emulator.IssuerKey().Mint(satoken.Claims{
		Issuer:            e.tokenIss,
		Audience:          []string{"iam"},
		Namespace:         namespace,
		ServiceAccount:    serviceAccount,
		ServiceAccountUID: uid(),
		Pod:               pod,
		PodUID:            uid(),
		IssuedAt:          e.opts.clock(),
		Lifetime:          lifetime,
	})
	if err != nil {
		t.Fatalf("emulatortest: mint pod token: %v", err)
	}
	return tok
}

// WritePodToken mints a pod token into a new file (mode 0600) in dir and
// returns its path.
func (e *Env) WritePodToken(t testing.TB, dir, namespace, serviceAccount, pod string, lifetime time.Duration) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "token-*")
	if err != nil {
		t.Fatalf("emulatortest: %v", err)
	}
	path := f.Name()
	_, werr := f.WriteString(e.MintPodToken(t, namespace, serviceAccount, pod, lifetime))
	if err := f.Close(); werr != nil || err != nil {
		t.Fatalf("emulatortest: write token file %s: %v %v", filepath.Base(path), werr, err)
	}
	return path
}

// Audit returns every request served so far (IAM and COS), oldest first.
func (e *Env) Audit() []audit.Entry { return e.Emulator.Audit().Entries() }

// AuditLen is the number of audit entries so far: take it before an action
// and pass it to AuditSince afterwards.
func (e *Env) AuditLen() int { return e.Emulator.Audit().Len() }

// AuditSince returns the audit entries from index n on.
func (e *Env) AuditSince(n int) []audit.Entry { return e.Emulator.Audit().Since(n) }

// SetAccessTokenLifetime changes the lifetime of IAM access tokens issued from now on (>= 1s).
func (e *Env) SetAccessTokenLifetime(d time.Duration) { e.Emulator.SetAccessTokenLifetime(d) }

// COSFaults controls fault injection on COS.
func (e *Env) COSFaults() *faults.Injector { return e.Emulator.COSFaults() }

// IAMFaults controls fault injection on IAM.
func (e *Env) IAMFaults() *faults.Injector { return e.Emulator.IAMFaults() }

// HMAC returns the HMAC credentials of the default configuration (Manager).
func (e *Env) HMAC() (accessKeyID, secretAccessKey string) {
	return emulator.DefaultHMACAccessKeyID, emulator.DefaultHMACSecretKey
}

// APIKey returns the API key of the default configuration (id APIKeyID, Manager).
func (e *Env) APIKey() string { return emulator.DefaultAPIKey }

// TokenURL is the IAM token endpoint.
func (e *Env) TokenURL() string { return e.IAMURL + "/identity/token" }

func uid() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
