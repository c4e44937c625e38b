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
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/iam"
	"github.com/cosmount/cosmount/pkg/mounter"
)

// fakeMounter keeps mounts in memory. block, if set, makes Mount wait until
// it is closed (for in-flight tests).
type fakeMounter struct {
	mu       sync.Mutex
	mounts   map[string]*fakeMount
	mountN   int
	unmountN int
	updateN  int
	mountErr error
	block    chan struct{}
	entered  chan struct{}
}

type fakeMount struct {
	vol   mounter.Volume
	rec   mounter.Record
	state mounter.State
}

func newFakeMounter() *fakeMounter { return &fakeMounter{mounts: map[string]*fakeMount{}} }

func (f *fakeMounter) Status(target string) (mounter.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.mounts[filepath.Clean(target)]
	if !ok {
		return mounter.Status{State: mounter.NotMounted}, nil
	}
	rec := m.rec
	return mounter.Status{State: m.state, Record: &rec}, nil
}

func (f *fakeMounter) argsHash(v mounter.Volume) string {
	v.Credentials = mounter.Credentials{}
	return strings.Join(v.Args("/state/cred"), " ")
}

func (f *fakeMounter) Compatible(v mounter.Volume, rec *mounter.Record) bool {
	return rec != nil && rec.VolumeID == v.VolumeID && rec.ArgsHash == f.argsHash(v)
}

func (f *fakeMounter) Mount(ctx context.Context, v mounter.Volume) error {
	if f.entered != nil {
		close(f.entered)
	}
	if f.block != nil {
		<-f.block
	}
	if err := v.Validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mountN++
	if f.mountErr != nil {
		return f.mountErr
	}
	if _, ok := f.mounts[v.Target]; ok {
		return mounter.ErrTargetBusy
	}
	f.mounts[v.Target] = &fakeMount{vol: v, state: mounter.Healthy, rec: mounter.Record{
		Target: v.Target, VolumeID: v.VolumeID, PID: 1000 + f.mountN, ArgsHash: f.argsHash(v), Auth: v.Auth,
	}}
	return nil
}

func (f *fakeMounter) SameCredentials(target string, c mounter.Credentials) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.mounts[target]
	if !ok {
		return false, mounter.ErrNotPublished
	}
	return m.vol.Credentials == c, nil
}

func (f *fakeMounter) UpdateCredentials(target string, c mounter.Credentials) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.mounts[target]
	if !ok {
		return mounter.ErrNotPublished
	}
	f.updateN++
	m.vol.Credentials = c
	return nil
}

func (f *fakeMounter) Unmount(ctx context.Context, target string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.mounts[target]; ok {
		f.unmountN++
		delete(f.mounts, target)
	}
	return nil
}

func (f *fakeMounter) Records() ([]mounter.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []mounter.Record
	for _, m := range f.mounts {
		out = append(out, m.rec)
	}
	return out, nil
}

func (f *fakeMounter) get(target string) *fakeMount {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mounts[target]
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

func startPlugin(t *testing.T) *testPlugin {
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
	opts := DefaultOptions()
	opts.Endpoint = "unix://" + filepath.Join(dir, "csi.sock")
	opts.NodeID = "node-1"
	opts.StateDir = filepath.Join(dir, "state")
	opts.IAMEndpoint = "http://127.0.0.1:9"
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
