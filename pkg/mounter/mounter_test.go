package mounter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cosmount/cosmount/pkg/mounterapi"
	"github.com/cosmount/cosmount/pkg/volume"
)

// fakeBinary is the testdata/fakemount server, built once by TestMain.
var fakeBinary string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "mounter-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	fakeBinary = filepath.Join(dir, "fakemount")
	cmd := exec.Command("go", "build", "-o", fakeBinary, "./testdata/fakemount")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building fake cosmount: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// needFUSE skips tests that mount when this machine cannot.
func needFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("no fusermount3 (apt-get install fuse3)")
	}
}

// syncBuffer collects the servers' log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// stateDir is short: control sockets live in it.
func stateDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func newTestMounter(t *testing.T, state string, tweak ...func(*Options)) *Mounter {
	t.Helper()
	logs := &syncBuffer{}
	opts := Options{StateDir: state, Binary: fakeBinary, MountTimeout: 30 * time.Second, StopTimeout: 20 * time.Second, ProbeTimeout: 10 * time.Second, Log: logs}
	for _, f := range tweak {
		f(&opts)
	}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	m.Recover()
	t.Cleanup(func() {
		m.Close()
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return m
}

// testRequest returns a trusted-profile publish on a fresh target (not yet
// created: the mounter makes it) and registers a cleanup that stops any
// server and mount a failed test left behind.
func testRequest(t *testing.T, m *Mounter, name string) *mounterapi.PublishRequest {
	t.Helper()
	target := filepath.Join(t.TempDir(), name)
	t.Cleanup(func() { cleanupTarget(t, m, target) })
	o := volume.DefaultOptions()
	o.UID, o.AllowOther = 1000, true
	return &mounterapi.PublishRequest{
		Spec: volume.Spec{
			VolumeID: "vol-" + name, Target: target, Bucket: "bucket", Prefix: "team/a",
			Endpoint: "http://127.0.0.1:1", Region: "us-south", IAMEndpoint: "http://127.0.0.1:2",
			Auth: volume.AuthTrustedProfile, Profile: volume.Profile{ID: "Profile-1"}, Options: o,
		},
		Credentials: volume.Credentials{CRToken: "pod-token-one"},
	}
}

// cleanupTarget kills whatever server the record names and detaches the mount.
func cleanupTarget(t *testing.T, m *Mounter, target string) {
	if rec, _ := readRecord(m.volumeDir(target)); rec != nil {
		_ = syscall.Kill(rec.PID, syscall.SIGCONT)
		_ = killGroup(rec.PID, rec.ProcStart)
		_ = removeCgroup(rec.Cgroup)
	}
	if mi, _ := mountAt(target); mi != nil {
		_ = unix.Unmount(target, unix.MNT_DETACH)
	}
}

func readMountFile(t *testing.T, target, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(target, name))
	if err != nil {
		t.Fatalf("read %s through the mount: %v", name, err)
	}
	return strings.TrimSpace(string(b))
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func wantCode(t *testing.T, what string, err error, code codes.Code, parts ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: %v, want %s", what, err, code)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("%s: %v, want it to mention %q", what, err, p)
		}
	}
}

func publish(t *testing.T, m *Mounter, req *mounterapi.PublishRequest) *mounterapi.PublishResponse {
	t.Helper()
	resp, err := m.Publish(context.Background(), req)
	if err != nil {
		t.Fatalf("Publish %s: %v", req.Spec.Target, err)
	}
	return resp
}

func unpublish(t *testing.T, m *Mounter, target string) {
	t.Helper()
	if _, err := m.Unpublish(context.Background(), &mounterapi.UnpublishRequest{Target: target}); err != nil {
		t.Fatalf("Unpublish %s: %v", target, err)
	}
}

// assertClean checks that nothing of target is left: no mount, no
// directory, no state, no process.
func assertClean(t *testing.T, m *Mounter, target string, pid int) {
	t.Helper()
	if mi, _ := mountAt(target); mi != nil {
		t.Errorf("%s is still mounted (%s)", target, mi.FSType)
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("target %s still exists: %v", target, err)
	}
	if _, err := os.Stat(m.volumeDir(target)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state of %s still exists: %v", target, err)
	}
	if pid > 0 {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			// A child that exited may still be a zombie until Wait reaps it.
			if state, _, ok, _ := procState(pid); ok && state != 'Z' {
				t.Errorf("server %d still runs", pid)
			}
		}
	}
}

func TestPublishRepublishUnpublish(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	m := newTestMounter(t, stateDir(t))
	req := testRequest(t, m, "t1")
	target := req.Spec.Target

	resp := publish(t, m, req)
	if resp.Action != mounterapi.ActionMounted || resp.Volume.State != mounterapi.StateHealthy {
		t.Fatalf("first publish: %+v", resp)
	}
	pid := readMountFile(t, target, "pid")
	if pid != strconv.Itoa(resp.Volume.PID) {
		t.Errorf("status pid %d, server says %s", resp.Volume.PID, pid)
	}
	if got := readMountFile(t, target, "credsum"); got != sum("pod-token-one") {
		t.Errorf("credential file holds the wrong token")
	}
	args := readMountFile(t, target, "args")
	for _, want := range []string{"-o\nuid=1000,allow_other", "bucket:/team/a\n" + target, "--control-socket", "--volume-id\nvol-t1"} {
		if !strings.Contains(args, want) {
			t.Errorf("server argv lacks %q:\n%s", want, args)
		}
	}
	if strings.Contains(args, "pod-token-one") || strings.Contains(readMountFile(t, target, "env"), "pod-token-one") {
		t.Error("the token is on the server's command line or in its environment")
	}
	fi, err := os.Stat(filepath.Join(m.volumeDir(target), "token"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("credential file: %v, mode %v", err, fi.Mode())
	}

	// The same publish again (kubelet's periodic republish, token unchanged).
	if resp := publish(t, m, req); resp.Action != mounterapi.ActionUnchanged {
		t.Errorf("republish with the same token: %s", resp.Action)
	}
	// A renewed token replaces only the credential file.
	req.Credentials.CRToken = "pod-token-two"
	if resp := publish(t, m, req); resp.Action != mounterapi.ActionCredentialsUpdated {
		t.Errorf("republish with a new token: %s", resp.Action)
	}
	if got := readMountFile(t, target, "credsum"); got != sum("pod-token-two") {
		t.Errorf("new token not installed")
	}
	if got := readMountFile(t, target, "pid"); got != pid {
		t.Errorf("republish restarted the server: %s -> %s", pid, got)
	}
	// Options in another order with an explicit default are the same volume.
	same := *req
	same.Spec.Options.PartSize = volume.DefaultOptions().PartSize
	if resp := publish(t, m, &same); resp.Action != mounterapi.ActionUnchanged {
		t.Errorf("equivalent spec: %s", resp.Action)
	}
	// A different volume on the same target is refused and changes nothing.
	other := *req
	other.Spec.Bucket = "other-bucket"
	other.Spec.Options.ReadOnly = true
	_, err = m.Publish(ctx, &other)
	wantCode(t, "different volume", err, codes.AlreadyExists, "bucketName", "mount options")

	st, err := m.Status(ctx, &mounterapi.StatusRequest{Target: target, Pending: true})
	if err != nil {
		t.Fatal(err)
	}
	if st.State != mounterapi.StateHealthy || st.Usage == nil || st.Pending == nil || st.Pending.Files != 0 || st.Spec.Bucket != "bucket" {
		t.Errorf("status %+v", st)
	}
	// Without asking, the server's control socket is not called.
	if plain, err := m.Status(ctx, &mounterapi.StatusRequest{Target: target}); err != nil || plain.Pending != nil {
		t.Errorf("status without Pending: %+v, %v", plain, err)
	}
	if st.CredentialsDigest != req.Credentials.Digest(volume.AuthTrustedProfile) {
		t.Error("status digest is not the installed credentials'")
	}
	list, err := m.List(ctx, &mounterapi.ListRequest{})
	if err != nil || len(list.Volumes) != 1 || list.Volumes[0].Target != target {
		t.Errorf("List = %+v, %v", list, err)
	}
	if list, err := m.List(ctx, &mounterapi.ListRequest{VolumeID: st.VolumeID}); err != nil || len(list.Volumes) != 1 {
		t.Errorf("List of volume %s = %+v, %v", st.VolumeID, list, err)
	}
	if list, err := m.List(ctx, &mounterapi.ListRequest{VolumeID: "another-volume"}); err != nil || len(list.Volumes) != 0 {
		t.Errorf("List of another volume = %+v, %v", list, err)
	}

	unpublish(t, m, target)
	p, _ := strconv.Atoi(pid)
	assertClean(t, m, target, p)
	_, err = m.Status(ctx, &mounterapi.StatusRequest{Target: target})
	wantCode(t, "status after unpublish", err, codes.NotFound)
	// Unpublish is idempotent.
	if r, err := m.Unpublish(ctx, &mounterapi.UnpublishRequest{Target: target}); err != nil || r.Action != mounterapi.ActionNotPublished {
		t.Errorf("second unpublish: %+v, %v", r, err)
	}
}

func TestPublishRefusesBadRequests(t *testing.T) {
	m := newTestMounter(t, stateDir(t), func(o *Options) { o.ServerMemoryLimit = 256 * volume.MiB })
	for _, tc := range []struct {
		name   string
		mutate func(*mounterapi.PublishRequest)
		want   string
	}{
		{"relative target", func(r *mounterapi.PublishRequest) { r.Spec.Target = "rel" }, "target"},
		{"bad bucket", func(r *mounterapi.PublishRequest) { r.Spec.Bucket = "B" }, "bucketName"},
		{"no token", func(r *mounterapi.PublishRequest) { r.Credentials.CRToken = " " }, "credentials"},
		{"small part", func(r *mounterapi.PublishRequest) { r.Spec.Options.PartSize = volume.MiB }, "part_size"},
		{"over budget", func(r *mounterapi.PublishRequest) { r.Spec.Options.MemoryLimit = 512 * volume.MiB }, "memory_limit"},
		{"node option", func(r *mounterapi.PublishRequest) { r.Spec.Options.TempDir = "/etc" }, "temp_dir"},
		{"disk cache without the node's directory", func(r *mounterapi.PublishRequest) {
			r.Spec.Options.MemoryLimit, r.Spec.Options.CacheSize = 64*volume.MiB, volume.GiB
		}, "cache_size"},
		{"memory cache over budget", func(r *mounterapi.PublishRequest) {
			r.Spec.Options.MemoryLimit, r.Spec.Options.CacheMemory = 128*volume.MiB, 128*volume.MiB
		}, "cache_memory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := testRequest(t, m, "bad")
			tc.mutate(req)
			_, err := m.Publish(context.Background(), req)
			wantCode(t, tc.name, err, codes.InvalidArgument, tc.want)
			if _, err := os.Stat(req.Spec.Target); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused publish created the target: %v", err)
			}
		})
	}
}

func TestPublishFailuresLeaveNothing(t *testing.T) {
	needFUSE(t)
	m := newTestMounter(t, stateDir(t), func(o *Options) { o.MountTimeout = 3 * time.Second })
	for _, tc := range []struct {
		bucket string
		code   codes.Code
		want   string
	}{
		{"fake-fail", codes.Internal, "failing as asked"},
		{"fake-silent", codes.Internal, "exited before its mount was live"},
		{"fake-hang", codes.DeadlineExceeded, "did not report its mount live"},
	} {
		t.Run(tc.bucket, func(t *testing.T) {
			req := testRequest(t, m, "f")
			req.Spec.Bucket = tc.bucket
			_, err := m.Publish(context.Background(), req)
			wantCode(t, tc.bucket, err, tc.code, tc.want)
			assertClean(t, m, req.Spec.Target, 0)
			m.mu.Lock()
			n := len(m.servers)
			m.mu.Unlock()
			if n != 0 {
				t.Errorf("%d servers still tracked", n)
			}
		})
	}
}

func TestUnpublishWaitsForUploads(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	m := newTestMounter(t, stateDir(t))
	req := testRequest(t, m, "up")
	resp := publish(t, m, req)
	target := req.Spec.Target
	pending := filepath.Join(m.volumeDir(target), "fake-pending")
	if err := os.WriteFile(pending, []byte("2 3145728"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := m.Status(ctx, &mounterapi.StatusRequest{Target: target, Pending: true})
	if err != nil || st.Pending == nil || st.Pending.Files != 2 {
		t.Fatalf("status with uploads pending: %+v, %v", st, err)
	}
	_, err = m.Unpublish(ctx, &mounterapi.UnpublishRequest{Target: target})
	wantCode(t, "unpublish while uploading", err, codes.Unavailable, "vol-up", "2 file(s), 3MiB, not yet uploaded")
	if readMountFile(t, target, "pid") != strconv.Itoa(resp.Volume.PID) {
		t.Fatal("the server is gone while it had uploads pending")
	}
	if _, err := os.Stat(pending); !errors.Is(err, os.ErrNotExist) {
		t.Error("the unpublish did not ask the server to flush")
	}
	if got := testutil.ToFloat64(m.metrics.unpublishWaits); got != 1 {
		t.Errorf("unpublish waits = %v", got)
	}
	// The uploads are done (the fake flushed): the retry succeeds.
	unpublish(t, m, target)
	assertClean(t, m, target, resp.Volume.PID)
}

// A server that does not exit after SIGTERM although nothing is pending is
// killed; one that answers nothing is never killed.
func TestUnpublishStubbornAndStoppedServers(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	m := newTestMounter(t, stateDir(t), func(o *Options) { o.StopTimeout = time.Second })

	stubborn := testRequest(t, m, "stubborn")
	stubborn.Spec.Bucket = "fake-stubborn"
	r := publish(t, m, stubborn)
	unpublish(t, m, stubborn.Spec.Target)
	assertClean(t, m, stubborn.Spec.Target, r.Volume.PID)

	stopped := testRequest(t, m, "stopped")
	r = publish(t, m, stopped)
	if err := syscall.Kill(r.Volume.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	_, err := m.Unpublish(ctx, &mounterapi.UnpublishRequest{Target: stopped.Spec.Target})
	wantCode(t, "unpublish of a stopped server", err, codes.Unavailable, "does not answer")
	if state, _, ok, _ := procState(r.Volume.PID); !ok || state == 'Z' {
		t.Fatal("a server that did not answer was stopped")
	}
	if err := syscall.Kill(r.Volume.PID, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	unpublish(t, m, stopped.Spec.Target)
	assertClean(t, m, stopped.Spec.Target, r.Volume.PID)
}

// threads is this process's OS thread count.
func threads(t *testing.T) int {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatal("no Threads line")
	return 0
}

// Status calls against a SIGSTOPped server fail fast and do not pile up
// threads or goroutines in the mounter.
func TestStoppedServerCostsBoundedThreads(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	m := newTestMounter(t, stateDir(t), func(o *Options) { o.ProbeTimeout = 200 * time.Millisecond })
	req := testRequest(t, m, "sigstop")
	r := publish(t, m, req)
	if err := syscall.Kill(r.Volume.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(r.Volume.PID, syscall.SIGCONT) })
	baseThreads, baseGoroutines := threads(t), runtime.NumGoroutine()
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < 500; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := m.Status(ctx, &mounterapi.StatusRequest{Target: req.Spec.Target})
			if err != nil || st.State != mounterapi.StateUnresponsive {
				t.Errorf("status of a stopped server: %+v, %v", st, err)
			}
		}()
		if i%50 == 49 {
			wg.Wait()
		}
	}
	wg.Wait()
	if d := time.Since(start); d > 2*time.Minute {
		t.Errorf("500 status calls took %s", d)
	}
	// One statfs is stuck in the kernel (one goroutine, one thread); the
	// rest waited for it. Allow a little slack for the runtime's own.
	if got := threads(t); got > baseThreads+4 {
		t.Errorf("threads grew from %d to %d", baseThreads, got)
	}
	if got := runtime.NumGoroutine(); got > baseGoroutines+4 {
		t.Errorf("goroutines grew from %d to %d", baseGoroutines, got)
	}
	syscall.Kill(r.Volume.PID, syscall.SIGCONT)
	unpublish(t, m, req.Spec.Target)
}

// waitState polls Status until the volume is in state.
func waitState(t *testing.T, m *Mounter, target string, state mounterapi.State) *mounterapi.VolumeStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := m.Status(context.Background(), &mounterapi.StatusRequest{Target: target})
		if err == nil && st.State == state {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never became %s: %+v, %v", target, state, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestDeadServerIsReportedUntilUnpublished(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	m := newTestMounter(t, stateDir(t))
	req := testRequest(t, m, "dead")
	r := publish(t, m, req)
	target := req.Spec.Target
	if err := syscall.Kill(r.Volume.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, m, target, mounterapi.StateDead)
	// The watcher records it; until then a probe already says dead.
	deadline := time.Now().Add(10 * time.Second)
	for st.Reason != "ServerKilled" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		st = waitState(t, m, target, mounterapi.StateDead)
	}
	if st.Reason != "ServerKilled" || !strings.Contains(st.Message, "signal 9") || st.Died == nil {
		t.Errorf("dead status %+v", st)
	}
	if got := testutil.ToFloat64(m.metrics.deaths.WithLabelValues("ServerKilled")); got != 1 {
		t.Errorf("deaths{ServerKilled} = %v", got)
	}
	// The dead mount stays: the pod sees ENOTCONN, not the directory beneath.
	if mi, _ := mountAt(target); mi == nil {
		t.Error("the dead mount was removed before the unpublish")
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(target, &sfs); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("statfs of the dead mount: %v, want ENOTCONN", err)
	}
	// A republish does not paper over it.
	_, err := m.Publish(ctx, req)
	wantCode(t, "republish of a dead volume", err, codes.FailedPrecondition, "signal 9", "until the pod is deleted")
	// A new mounter (restart) still knows.
	m2 := newTestMounter(t, m.opts.StateDir)
	if st := waitState(t, m2, target, mounterapi.StateDead); st.Reason != "ServerKilled" {
		t.Errorf("after a mounter restart: %+v", st)
	}
	unpublish(t, m2, target)
	assertClean(t, m2, target, 0)
}

// A mounter that restarts adopts the servers that still run (outside a
// container, or under a supervisor) and marks the ones that ended dead.
func TestRecoverAfterMounterRestart(t *testing.T) {
	needFUSE(t)
	state := stateDir(t)
	m1 := newTestMounter(t, state)
	a, b := testRequest(t, m1, "a"), testRequest(t, m1, "b")
	ra, rb := publish(t, m1, a), publish(t, m1, b)
	// m1 "dies": it stops watching its servers (they are its children
	// here, so it would otherwise still see them end through Wait).
	m1.Close()
	m1.mu.Lock()
	for _, s := range m1.servers {
		s.stopping = true
	}
	m1.mu.Unlock()
	// While no mounter runs, b's server ends.
	if err := killGroup(rb.Volume.PID, mustStart(t, rb.Volume.PID)); err != nil {
		t.Fatal(err)
	}

	m2 := newTestMounter(t, state)
	if st := waitState(t, m2, a.Spec.Target, mounterapi.StateHealthy); st.PID != ra.Volume.PID {
		t.Errorf("adopted pid %d, want %d", st.PID, ra.Volume.PID)
	}
	if st := waitState(t, m2, b.Spec.Target, mounterapi.StateDead); st.Reason != "ServerGone" {
		t.Errorf("b after restart: %+v", st)
	}
	// The adopted server's token can still be swapped, and it is stopped by PID.
	a.Credentials.CRToken = "rotated"
	if r := publish(t, m2, a); r.Action != mounterapi.ActionCredentialsUpdated {
		t.Errorf("republish after restart: %s", r.Action)
	}
	if got := readMountFile(t, a.Spec.Target, "credsum"); got != sum("rotated") {
		t.Error("rotated token not installed")
	}
	unpublish(t, m2, a.Spec.Target)
	unpublish(t, m2, b.Spec.Target)
	assertClean(t, m2, a.Spec.Target, ra.Volume.PID)
	assertClean(t, m2, b.Spec.Target, 0)
}

func mustStart(t *testing.T, pid int) uint64 {
	t.Helper()
	_, start, ok, err := procState(pid)
	if !ok || err != nil {
		t.Fatalf("procState(%d): %v, %v", pid, ok, err)
	}
	return start
}

// A record whose PID now belongs to another process (PID reuse) is not
// adopted: the start time tells them apart.
func TestRecoverIgnoresReusedPID(t *testing.T) {
	state := stateDir(t)
	target := "/var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/v/mount"
	dir := filepath.Join(state, TargetHash(target))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// This test process stands in for the unrelated process with a reused PID.
	start := mustStart(t, os.Getpid())
	if err := writeRecord(dir, &Record{Spec: volume.Spec{VolumeID: "v", Target: target}, PID: os.Getpid(), ProcStart: start + 1}); err != nil {
		t.Fatal(err)
	}
	m := newTestMounter(t, state)
	rec, err := readRecord(dir)
	if err != nil || rec == nil || rec.Died == nil || rec.Reason != "ServerGone" {
		t.Fatalf("record after recover: %+v, %v", rec, err)
	}
	m.mu.Lock()
	n := len(m.servers)
	m.mu.Unlock()
	if n != 0 {
		t.Error("a reused PID was adopted")
	}
}

// One unreadable record does not hide the others from List, metrics or
// recovery, and its target can still be unpublished.
func TestUnreadableRecordIsSkipped(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	state := stateDir(t)
	m := newTestMounter(t, state)
	good := testRequest(t, m, "good")
	publish(t, m, good)
	badTarget := filepath.Join(t.TempDir(), "bad")
	if err := os.MkdirAll(badTarget, 0o750); err != nil {
		t.Fatal(err)
	}
	badDir := m.volumeDir(badTarget)
	if err := os.MkdirAll(badDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(badDir, recordFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	list, err := m.List(ctx, &mounterapi.ListRequest{})
	if err != nil || len(list.Volumes) != 1 || list.Volumes[0].Target != good.Spec.Target {
		t.Fatalf("List with a bad record: %+v, %v", list, err)
	}
	// A second mounter recovers past the bad record and adopts the good one.
	again := newTestMounter(t, state)
	again.mu.Lock()
	_, adopted := again.servers[good.Spec.Target]
	again.mu.Unlock()
	if !adopted {
		t.Error("a mounter starting with a bad record did not adopt the good volume")
	}
	unpublish(t, m, badTarget)
	assertClean(t, m, badTarget, 0)
	unpublish(t, m, good.Spec.Target)
}

func TestParseMountInfo(t *testing.T) {
	const data = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
101 22 0:50 / /var/lib/kubelet/pods/x/volumes/a\040b rw,nosuid,nodev,relatime shared:60 - fuse.cosmount cosmount rw,user_id=0,group_id=0
102 22 0:51 / /mnt/plain rw master:3 - tmpfs tmp rw
`
	got, err := parseMountInfo(strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	want := []MountInfo{
		{MountPoint: "/", FSType: "ext4", Source: "/dev/sda1"},
		{MountPoint: "/var/lib/kubelet/pods/x/volumes/a b", FSType: "fuse.cosmount", Source: "cosmount"},
		{MountPoint: "/mnt/plain", FSType: "tmpfs", Source: "tmp"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if !got[1].isFUSE() || got[2].isFUSE() {
		t.Error("isFUSE is wrong")
	}
	if _, err := parseMountInfo(strings.NewReader("1 2 3 4 5 6 7 8 9 10\n")); err == nil {
		t.Error("a line without separator parsed")
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	long := "/" + strings.Repeat("x", 90)
	for _, o := range []Options{
		{StateDir: "relative", Binary: "b"},
		{StateDir: long, Binary: "b"},
		{StateDir: "/run/x"},
		{StateDir: "/run/x", Binary: "b", ServerMemoryLimit: volume.MiB},
		{StateDir: "/run/x", Binary: "b", NodeOptions: volume.Options{TempDir: "tmp"}},
		{StateDir: "/run/x", Binary: "b", NodeOptions: volume.Options{CacheDir: "cache"}},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}
