package driver

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/iam"
	"github.com/cosmount/cosmount/pkg/mounterapi"
	"github.com/cosmount/cosmount/pkg/volume"
)

// fakeMounter is an in-memory mounterapi.Service with the mounter's
// contract: it validates, swaps credentials on republish, refuses another
// volume on a target, reports dead servers, and makes unpublish wait while
// uploads are pending. block, if set, makes Publish wait until it is closed
// (for in-flight tests).
type fakeMounter struct {
	mu         sync.Mutex
	mounts     map[string]*fakeMount
	mountN     int
	unmountN   int
	updateN    int
	publishN   int
	publishErr error
	block      chan struct{}
	entered    chan struct{}
}

type fakeMount struct {
	spec    volume.Spec
	creds   volume.Credentials
	pid     int
	state   mounterapi.State
	reason  string
	pending int // files not yet uploaded
}

func newFakeMounter() *fakeMounter { return &fakeMounter{mounts: map[string]*fakeMount{}} }

func (f *fakeMounter) status(m *fakeMount) mounterapi.VolumeStatus {
	vs := mounterapi.VolumeStatus{
		Target: m.spec.Target, VolumeID: m.spec.VolumeID, Spec: m.spec, State: m.state, Reason: m.reason,
		PID: m.pid, CredentialsDigest: m.creds.Digest(m.spec.Auth),
	}
	if m.state == mounterapi.StateDead {
		vs.Message = "the server was killed by signal 9"
	}
	if m.state == mounterapi.StateHealthy {
		vs.Usage = &mounterapi.Usage{BytesTotal: 1 << 50, BytesAvailable: 1 << 50, InodesTotal: 1 << 40, InodesAvailable: 1 << 40}
	}
	return vs
}

func (f *fakeMounter) Publish(ctx context.Context, req *mounterapi.PublishRequest) (*mounterapi.PublishResponse, error) {
	if f.entered != nil {
		close(f.entered)
	}
	if f.block != nil {
		<-f.block
	}
	if err := req.Spec.Validate(); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := req.Credentials.Validate(req.Spec.Auth); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.publishN++
	if f.publishErr != nil {
		return nil, f.publishErr
	}
	if m, ok := f.mounts[req.Spec.Target]; ok {
		switch {
		case m.state == mounterapi.StateDead:
			return nil, status.Errorf(codes.FailedPrecondition, "the server of volume %s is gone", m.spec.VolumeID)
		case !m.spec.Equivalent(&req.Spec):
			return nil, status.Errorf(codes.AlreadyExists, "target already serves volume %s with different %v", m.spec.VolumeID, m.spec.Differences(&req.Spec))
		case m.creds == req.Credentials:
			return &mounterapi.PublishResponse{Action: mounterapi.ActionUnchanged, Volume: f.status(m)}, nil
		}
		f.updateN++
		m.creds = req.Credentials
		return &mounterapi.PublishResponse{Action: mounterapi.ActionCredentialsUpdated, Volume: f.status(m)}, nil
	}
	f.mountN++
	m := &fakeMount{spec: req.Spec, creds: req.Credentials, pid: 1000 + f.mountN, state: mounterapi.StateHealthy}
	f.mounts[req.Spec.Target] = m
	return &mounterapi.PublishResponse{Action: mounterapi.ActionMounted, Volume: f.status(m)}, nil
}

func (f *fakeMounter) Unpublish(ctx context.Context, req *mounterapi.UnpublishRequest) (*mounterapi.UnpublishResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.mounts[req.Target]
	if !ok {
		return &mounterapi.UnpublishResponse{Action: mounterapi.ActionNotPublished}, nil
	}
	if req.VolumeID != "" && req.VolumeID != m.spec.VolumeID {
		return nil, status.Errorf(codes.NotFound, "target serves volume %s", m.spec.VolumeID)
	}
	if m.pending > 0 && m.state != mounterapi.StateDead {
		return nil, status.Errorf(codes.Unavailable, "volume %s at %s: %d file(s) not yet uploaded", m.spec.VolumeID, req.Target, m.pending)
	}
	f.unmountN++
	delete(f.mounts, req.Target)
	return &mounterapi.UnpublishResponse{Action: mounterapi.ActionUnmounted}, nil
}

func (f *fakeMounter) Status(ctx context.Context, req *mounterapi.StatusRequest) (*mounterapi.VolumeStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.mounts[req.Target]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "nothing is published at %s", req.Target)
	}
	vs := f.status(m)
	return &vs, nil
}

func (f *fakeMounter) List(ctx context.Context, req *mounterapi.ListRequest) (*mounterapi.ListResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &mounterapi.ListResponse{}
	for _, m := range f.mounts {
		if st := f.status(m); req.VolumeID == "" || st.VolumeID == req.VolumeID {
			out.Volumes = append(out.Volumes, st)
		}
	}
	return out, nil
}

func (f *fakeMounter) Version(ctx context.Context, req *mounterapi.VersionRequest) (*mounterapi.VersionResponse, error) {
	return &mounterapi.VersionResponse{API: mounterapi.APIVersion, Version: "fake"}, nil
}

func (f *fakeMounter) get(target string) *fakeMount {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mounts[target]
}

func (f *fakeMounter) set(target string, change func(*fakeMount)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f.mounts[target])
}

// fakeVerifier answers exchanges with err and counts them.
type fakeVerifier struct {
	mu       sync.Mutex
	err      error
	calls    int
	tokens   []string
	profiles []iam.Profile
}

func (v *fakeVerifier) VerifyTrustedProfile(ctx context.Context, endpoint string, p iam.Profile, tok string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls++
	v.tokens = append(v.tokens, tok)
	v.profiles = append(v.profiles, p)
	return v.err
}

func (v *fakeVerifier) VerifyAPIKey(ctx context.Context, endpoint, key string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls++
	return v.err
}

func (v *fakeVerifier) count() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.calls
}

// fakeStore is an in-memory COS with just what the controller needs.
type fakeStore struct {
	mu        sync.Mutex
	buckets   map[string]map[string]cos.ObjectInfo
	foreign   map[string]bool  // bucket names taken by another account
	lifecycle map[string]int32 // bucket -> days of its abort-incomplete-uploads rule
}

func newFakeStore() *fakeStore {
	return &fakeStore{buckets: map[string]map[string]cos.ObjectInfo{}, foreign: map[string]bool{}, lifecycle: map[string]int32{}}
}

func (s *fakeStore) SetAbortIncompleteUploads(ctx context.Context, b string, days int32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.buckets[b]; !ok {
		return notFound("PutBucketLifecycleConfiguration")
	}
	s.lifecycle[b] = days
	return nil
}

func (s *fakeStore) abortDays(b string) int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lifecycle[b]
}

func notFound(op string) error { return &cos.Error{Op: op, Kind: cos.ErrNotFound, StatusCode: 404} }

func (s *fakeStore) HeadBucket(ctx context.Context, b string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.foreign[b] {
		return &cos.Error{Op: "HeadBucket", Kind: cos.ErrAccessDenied, StatusCode: 403}
	}
	if _, ok := s.buckets[b]; !ok {
		return notFound("HeadBucket")
	}
	return nil
}

func (s *fakeStore) CreateBucket(ctx context.Context, b, lc string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.buckets[b]; ok || s.foreign[b] {
		return &cos.Error{Op: "CreateBucket", Kind: cos.ErrBucketAlreadyExists, Code: "BucketAlreadyExists", StatusCode: 409}
	}
	s.buckets[b] = map[string]cos.ObjectInfo{}
	return nil
}

func (s *fakeStore) EmptyAndDeleteBucket(ctx context.Context, b string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.buckets[b]; !ok {
		return notFound("DeleteBucket")
	}
	delete(s.buckets, b)
	return nil
}

func (s *fakeStore) HeadObject(ctx context.Context, b, k string) (cos.ObjectInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.buckets[b][k]
	if !ok {
		return cos.ObjectInfo{}, notFound("HeadObject")
	}
	return o, nil
}

func (s *fakeStore) PutObject(ctx context.Context, b, k string, body io.ReadSeeker, size int64, o cos.PutOptions) (cos.ObjectInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	bucket, ok := s.buckets[b]
	if !ok {
		return cos.ObjectInfo{}, notFound("PutObject")
	}
	if _, exists := bucket[k]; exists && o.IfNoneMatch == "*" {
		return cos.ObjectInfo{}, &cos.Error{Op: "PutObject", Kind: cos.ErrPreconditionFailed, StatusCode: 412}
	}
	var data []byte
	if body != nil {
		data, _ = io.ReadAll(body)
	}
	info := cos.ObjectInfo{Key: k, Size: int64(len(data)), Metadata: o.Metadata}
	bucket[k] = info
	return info, nil
}

func (s *fakeStore) ListObjects(ctx context.Context, b string, o cos.ListOptions) (cos.ListPage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	bucket, ok := s.buckets[b]
	if !ok {
		return cos.ListPage{}, notFound("ListObjects")
	}
	var keys []string
	for k := range bucket {
		if strings.HasPrefix(k, o.Prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if o.MaxKeys > 0 && len(keys) > int(o.MaxKeys) {
		keys = keys[:o.MaxKeys]
	}
	var page cos.ListPage
	for _, k := range keys {
		page.Objects = append(page.Objects, bucket[k])
	}
	return page, nil
}

func (s *fakeStore) DeleteObjects(ctx context.Context, b string, keys []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		delete(s.buckets[b], k)
	}
	return nil
}

func (s *fakeStore) keys(b string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.buckets[b] {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// fakeStores hands out one fakeStore and remembers the configs asked for.
type fakeStores struct {
	store   *fakeStore
	mu      sync.Mutex
	configs []StoreConfig
}

func (f *fakeStores) Store(ctx context.Context, cfg StoreConfig) (ObjectStore, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.configs = append(f.configs, cfg)
	return f.store, nil
}

// testPlugin is the whole plugin served over a real unix socket with fakes
// behind it, so tests go through the interceptor exactly as kubelet would.
type testPlugin struct {
	node       csi.NodeClient
	controller csi.ControllerClient
	identity   csi.IdentityClient
	mounter    *fakeMounter
	verifier   *fakeVerifier
	store      *fakeStore
	registry   *prometheus.Registry
	dir        string
}

// testOptions are the plugin options of the tests with fakes: the fakes
// listen nowhere, and these are the endpoints the tests name.
func testOptions() Options {
	opts := DefaultOptions()
	opts.NodeID = "node-1"
	opts.IAMEndpoint = "http://127.0.0.1:9"
	opts.AllowInsecureHTTP = true
	opts.AllowedIAMEndpoints = append([]string{"http://127.0.0.1:7"}, DefaultAllowedIAMEndpoints...)
	opts.AllowedCOSEndpoints = append([]string{"http://127.0.0.1:8080", "http://127.0.0.1:1"}, DefaultAllowedCOSEndpoints...)
	return opts
}

func startPlugin(t *testing.T) *testPlugin {
	t.Helper()
	return startPluginWith(t, nil)
}

// startPluginWith starts the plugin with testOptions changed by modify.
func startPluginWith(t *testing.T, modify func(*Options)) *testPlugin {
	t.Helper()
	// Unix socket paths are limited to 108 bytes; t.TempDir() can be longer.
	dir, err := os.MkdirTemp("", "csi-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &testPlugin{
		mounter:  newFakeMounter(),
		verifier: &fakeVerifier{},
		store:    newFakeStore(),
		registry: prometheus.NewRegistry(),
		dir:      dir,
	}
	opts := testOptions()
	opts.Endpoint = "unix://" + filepath.Join(dir, "csi.sock")
	if modify != nil {
		modify(&opts)
	}
	d, err := New(opts, Deps{Mounter: p.mounter, Verifier: p.verifier, Stores: &fakeStores{store: p.store}, Registry: p.registry})
	if err != nil {
		t.Fatal(err)
	}
	conn, _ := serve(t, d, filepath.Join(dir, "csi.sock"))
	p.node, p.controller, p.identity = csi.NewNodeClient(conn), csi.NewControllerClient(conn), csi.NewIdentityClient(conn)
	return p
}

// serve runs d until the test ends or stop is called and returns a client
// connection to the plugin's unix socket sock once it accepts connections.
// stop ends Run (at most once); it is also a t.Cleanup.
func serve(t *testing.T, d *Driver, sock string) (conn *grpc.ClientConn, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Error("plugin did not stop")
			}
		})
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("plugin socket did not appear")
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, stop
}

var errBoom = errors.New("boom")

func cosPut() cos.PutOptions { return cos.PutOptions{} }
