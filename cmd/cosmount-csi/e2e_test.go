package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/cosmount/cosmount/internal/testproc"
	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/emulator/config"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
	"github.com/cosmount/cosmount/pkg/iam"
	"github.com/cosmount/cosmount/pkg/mounterapi"
)

// These end-to-end tests drive the cosmount-csi binary over its socket
// exactly as kubelet does. The node plugin and the node's mounter each run
// in a PID namespace of their own (unshare --pid --fork --kill-child), as in
// their containers: killing a namespace's unshare kills every process in
// it, the way a container's death does. The real cosmount server and the
// emulator's IAM and COS are behind them.

const teamBProfile = "Profile-team-b"

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func buildBinaries(t *testing.T) (csiBin, serverBin string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "csi-e2e-bin-")
		if buildErr != nil {
			return
		}
		for name, pkg := range map[string]string{"cosmount-csi": ".", "cosmount": "../cosmount"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, name), pkg).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("build %s: %v\n%s", name, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "cosmount-csi"), filepath.Join(binDir, "cosmount")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

type e2e struct {
	t         *testing.T
	env       *emulatortest.Env
	dir       string
	csiBin    string
	serverBin string
	mounter   *testproc.Process
	plugin    *testproc.Process
	pluginN   int
	extraArgs []string // for the plugin
	node      csi.NodeClient
	conn      *grpc.ClientConn
	mounterC  *mounterapi.Client
	cos       *cos.Client
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	for _, bin := range []string{"fusermount3", "unshare"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("no %s", bin)
		}
	}
}

// newE2E starts the emulator and a work directory that is a shared mount,
// so that FUSE mounts made in the mounter's namespaces reach this one.
func newE2E(t *testing.T, opts ...emulatortest.Option) *e2e {
	t.Helper()
	needRoot(t)
	csiBin, serverBin := buildBinaries(t)
	dir, err := os.MkdirTemp("", "csi-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "--bind", dir, dir).CombinedOutput(); err != nil {
		t.Fatalf("bind mount: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "--make-shared", dir).CombinedOutput(); err != nil {
		t.Fatalf("make-shared: %v: %s", err, out)
	}
	e := &e2e{t: t, dir: dir, csiBin: csiBin, serverBin: serverBin}
	t.Cleanup(func() {
		e.killPlugin()
		e.killMounter()
		// Whatever a failed test left mounted below dir, then dir itself.
		mounts, _ := testproc.MountsUnder(dir)
		for i := len(mounts) - 1; i >= 0; i-- {
			syscall.Unmount(mounts[i].Point, syscall.MNT_DETACH)
		}
		syscall.Unmount(dir, syscall.MNT_DETACH)
		os.RemoveAll(dir)
	})
	e.env = emulatortest.Start(t, opts...)
	return e
}

// startNS starts bin in a PID namespace of its own, logging to logName.
func (e *e2e) startNS(name, logName string, args ...string) *testproc.Process {
	e.t.Helper()
	full := append([]string{"--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "unchanged", "--"}, args...)
	cmd := exec.Command("unshare", full...)
	// Proxy settings the servers must get, and an API key they must not.
	cmd.Env = append(os.Environ(), "HTTPS_PROXY=http://127.0.0.1:9", "NO_PROXY=127.0.0.1,localhost", "IBMCLOUD_API_KEY=not-for-the-servers")
	// Its own process group: a signal to the test's group (Ctrl-C) does not
	// reach it; the cleanup kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p, err := testproc.Start(name, filepath.Join(e.dir, logName), 0o600, cmd)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// killNS kills a namespace the way a container runtime does: its init
// (unshare's child) is SIGKILLed, and the kernel ends every process in the
// namespace with it. unshare exits once it has reaped that init, which is
// after the namespace is empty; if the init is already gone, unshare
// itself is killed.
func killNS(p *testproc.Process) {
	if p == nil || p.Exited() {
		return
	}
	killed := false
	for _, init := range childrenOf(p.PID()) {
		killed = syscall.Kill(init, syscall.SIGKILL) == nil || killed
	}
	if !killed {
		p.Kill()
	}
	<-p.Done()
}

func (e *e2e) mounterEndpoint() string { return "unix://" + filepath.Join(e.dir, "mounter.sock") }

func (e *e2e) startMounter() {
	e.t.Helper()
	e.mounter = e.startNS("mounter", "mounter.log", e.csiBin, "--mode", "mounter",
		"--mounter-endpoint", e.mounterEndpoint(), "--state-dir", filepath.Join(e.dir, "state"),
		"--cosmount-binary", e.serverBin, "--server-memory-limit", "384MiB", "--stop-timeout", "20s",
		"--mounter-metrics-address", "127.0.0.1:0", "--cache-dir", filepath.Join(e.dir, "cache"), "--v", "4")
	c, err := mounterapi.Dial(e.mounterEndpoint())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.WaitReady(ctx); err != nil {
		e.t.Fatalf("the mounter did not come up: %v\n%s", err, e.log("mounter.log"))
	}
	e.mounterC = c
}

// killMounter ends the mounter's namespace; every server dies with it.
// Before that, it stops what the mounter serves, so that nothing is left.
func (e *e2e) killMounter() {
	if e.mounter == nil || e.mounter.Exited() {
		return
	}
	if e.mounterC != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if list, err := e.mounterC.List(ctx, &mounterapi.ListRequest{}); err == nil {
			for _, v := range list.Volumes {
				if _, err := e.mounterC.Unpublish(ctx, &mounterapi.UnpublishRequest{Target: v.Target}); err != nil {
					e.t.Errorf("cleanup of %s: %v", v.Target, err)
				}
			}
		}
	}
	killNS(e.mounter)
}

func (e *e2e) startPlugin() {
	e.t.Helper()
	e.pluginN++
	args := append([]string{e.csiBin, "--endpoint", "unix://" + filepath.Join(e.dir, "csi.sock"), "--mode", "node",
		"--node-id", "node-1", "--iam-endpoint", e.env.IAMURL, "--mounter-endpoint", e.mounterEndpoint(), "--v", "5",
		// The emulator speaks plain http on loopback: allowed explicitly.
		"--allow-insecure-http", "--allowed-cos-endpoints", e.env.COSURL}, e.extraArgs...)
	e.plugin = e.startNS("plugin", fmt.Sprintf("plugin-%d.log", e.pluginN), args...)
	sock := filepath.Join(e.dir, "csi.sock")
	deadline := time.Now().Add(60 * time.Second)
	for {
		// The previous instance's socket file may linger until the new one replaces it.
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) || e.plugin.Exited() {
			e.t.Fatalf("plugin socket did not appear; log:\n%s", e.log(fmt.Sprintf("plugin-%d.log", e.pluginN)))
		}
		time.Sleep(50 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.t.Fatal(err)
	}
	e.conn = conn
	e.node = csi.NewNodeClient(conn)
}

// killPlugin kills the plugin's namespace, like a crash, an OOM kill or
// the rolling update of its container.
func (e *e2e) killPlugin() {
	if e.plugin == nil {
		return
	}
	e.conn.Close()
	killNS(e.plugin)
	e.plugin = nil
}

func (e *e2e) log(name string) string {
	data, _ := os.ReadFile(filepath.Join(e.dir, name))
	return string(data)
}

func tokens(tok string) string {
	b, _ := json.Marshal(map[string]any{"iam": map[string]string{"token": tok, "expirationTimestamp": time.Now().Add(time.Hour).Format(time.RFC3339)}})
	return string(b)
}

// request is the NodePublishVolume kubelet sends for a pod of namespace ns
// using a static PV of the emulator's bucket through profile.
func (e *e2e) request(pod, ns, profile string, flags ...string) *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{
		VolumeId:   "pv-" + pod,
		TargetPath: filepath.Join(e.dir, "kubelet", "pods", pod, "volumes", "kubernetes.io~csi", "pv-"+pod, "mount"),
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: flags}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		},
		VolumeContext: map[string]string{
			"bucketName": e.env.Bucket, "cosEndpoint": e.env.COSURL, "trustedProfileID": profile,
			"csi.storage.k8s.io/pod.name": pod, "csi.storage.k8s.io/pod.namespace": ns,
			"csi.storage.k8s.io/serviceAccount.name": "default", "csi.storage.k8s.io/ephemeral": "false",
			"csi.storage.k8s.io/serviceAccount.tokens": tokens(e.env.MintPodToken(e.t, ns, "default", pod, time.Hour)),
		},
	}
}

func (e *e2e) publish(pod, ns, profile string) *csi.NodePublishVolumeRequest {
	e.t.Helper()
	req := e.request(pod, ns, profile)
	if _, err := e.node.NodePublishVolume(context.Background(), req); err != nil {
		e.t.Fatalf("publish for %s/%s: %v", ns, pod, err)
	}
	return req
}

func (e *e2e) unpublish(req *csi.NodePublishVolumeRequest) error {
	_, err := e.node.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath})
	return err
}

// write runs a real shell in the pod's place and checks the object and the
// audit: a bearer PUT by the pod's own profile.
func (e *e2e) write(target, name, text, profile string) {
	e.t.Helper()
	start := e.env.AuditLen()
	out, err := exec.Command("/bin/sh", "-c", `echo "$1" > "$2"`, "sh", text, filepath.Join(target, name)).CombinedOutput()
	if err != nil {
		e.t.Fatalf("shell write of %s: %v: %s", name, err, out)
	}
	if got := e.readObject(name); got != text+"\n" {
		e.t.Errorf("object %s = %q, want %q", name, got, text+"\n")
	}
	for _, a := range e.env.AuditSince(start) {
		if a.Operation == "PutObject" && a.Key == name && a.Status == 200 && a.AuthScheme == "bearer" && a.PrincipalID == profile {
			return
		}
	}
	e.t.Errorf("no bearer PutObject of %s by %s in the audit", name, profile)
}

func (e *e2e) cosClient() *cos.Client {
	e.t.Helper()
	if e.cos != nil {
		return e.cos
	}
	ex, err := iam.NewClient(iam.ClientOptions{BaseURL: e.env.IAMURL})
	if err != nil {
		e.t.Fatal(err)
	}
	src, err := iam.NewAPIKeySource(ex, e.env.APIKey())
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := cos.New(cos.Options{Endpoint: e.env.COSURL, UsePathStyle: true, Tokens: iam.NewCachingSource(src, iam.CachingOptions{})})
	if err != nil {
		e.t.Fatal(err)
	}
	e.cos = c
	return c
}

func (e *e2e) readObject(key string) string {
	e.t.Helper()
	body, _, err := e.cosClient().GetObject(context.Background(), e.env.Bucket, key, cos.GetOptions{})
	if err != nil {
		e.t.Fatalf("get %s: %v", key, err)
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

// status asks the mounter (not the plugin) about a target.
func (e *e2e) status(target string) *mounterapi.VolumeStatus {
	e.t.Helper()
	st, err := e.mounterC.Status(context.Background(), &mounterapi.StatusRequest{Target: target})
	if err != nil {
		e.t.Fatalf("mounter status of %s: %v", target, err)
	}
	return st
}

// mountID is the kernel's ID of the mount on target: the same ID means the
// same mount, never remounted.
func mountID(t *testing.T, target string) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	id := ""
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && testproc.UnescapeMountinfo(f[4]) == target {
			id = f[0]
		}
	}
	if id == "" {
		t.Fatalf("%s is not mounted", target)
	}
	return id
}

func (e *e2e) assertGone(target string) {
	e.t.Helper()
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		e.t.Errorf("target %s still exists: %v", target, err)
	}
	if testproc.IsMounted(target, "") {
		e.t.Errorf("%s is still mounted", target)
	}
}

// assertNoTokenInLogs checks every log of the run for anything JWT-shaped.
func (e *e2e) assertNoTokenInLogs() {
	e.t.Helper()
	files, _ := filepath.Glob(filepath.Join(e.dir, "*.log"))
	if len(files) == 0 {
		e.t.Error("no log files")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			e.t.Fatal(err)
		}
		if bytes.Contains(data, []byte("eyJ")) {
			e.t.Errorf("%s contains a token", f)
		}
	}
}

// writer is a pod that writes one small file every interval and, at the
// same time, one large file in a stream; every error it sees is recorded.
type writer struct {
	t       *testing.T
	target  string
	stop    chan struct{}
	done    sync.WaitGroup
	mu      sync.Mutex
	errs    []error
	small   []string // names written and closed without error
	bigSum  [32]byte
	bigSize int64
	chunks  atomic.Int64
}

func startWriter(t *testing.T, target string, bigMiB int) *writer {
	w := &writer{t: t, target: target, stop: make(chan struct{})}
	w.done.Add(2)
	go func() {
		defer w.done.Done()
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			name := fmt.Sprintf("tick-%04d.txt", i)
			if err := os.WriteFile(filepath.Join(target, name), []byte(name+"\n"), 0o644); err != nil {
				w.fail(fmt.Errorf("small file %s: %w", name, err))
				continue
			}
			w.mu.Lock()
			w.small = append(w.small, name)
			w.mu.Unlock()
		}
	}()
	go func() {
		defer w.done.Done()
		f, err := os.Create(filepath.Join(target, "stream.bin"))
		if err != nil {
			w.fail(err)
			return
		}
		h := sha256.New()
		chunk := make([]byte, 1<<20)
		for i := 0; i < bigMiB; i++ {
			for j := range chunk {
				chunk[j] = byte(i*7 + j)
			}
			if _, err := f.Write(chunk); err != nil {
				w.fail(fmt.Errorf("stream.bin chunk %d: %w", i, err))
				f.Close()
				return
			}
			h.Write(chunk)
			w.chunks.Add(1)
			// A steady stream over the whole test, not a burst at its start.
			time.Sleep(40 * time.Millisecond)
		}
		if err := f.Close(); err != nil {
			w.fail(fmt.Errorf("close stream.bin: %w", err))
			return
		}
		w.mu.Lock()
		copy(w.bigSum[:], h.Sum(nil))
		w.bigSize = int64(bigMiB) << 20
		w.mu.Unlock()
	}()
	return w
}

func (w *writer) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs = append(w.errs, err)
}

// finish stops the small writes, waits for the stream to be closed and
// returns what was written.
func (w *writer) finish() (small []string, bigSum [32]byte, bigSize int64, errs []error) {
	close(w.stop)
	w.done.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.small, w.bigSum, w.bigSize, w.errs
}

// TestPluginRestartKeepsMounts is the node plugin's container dying (crash,
// OOM kill, upgrade) while a pod writes: the plugin's whole PID namespace is
// killed twice, the pod's writes never fail, every byte lands, the mount is
// never replaced, a republish after the restart swaps the token through the
// mounter, and unpublish after it stops the server cleanly.
func TestPluginRestartKeepsMounts(t *testing.T) {
	e := newE2E(t, emulatortest.WithConfig(func(c *config.Config) {
		c.Profiles = append(c.Profiles, config.Profile{
			ID: teamBProfile, Name: "team-b-writer",
			Links:    []config.Link{{Cluster: emulatortest.Cluster, Namespace: "team-b", ServiceAccount: "default"}},
			Policies: []config.Policy{{Role: config.RoleWriter}},
		})
	}))
	e.startMounter()
	e.startPlugin()
	ctx := context.Background()

	// The pod's first token expires soon; access tokens live 2 s, so the
	// server exchanges its pod token every few seconds and would fail once
	// that token expired, unless the republish below installed the new one.
	const firstTokenLife = 25 * time.Second
	req := e.request("writer", "default", emulatortest.WriterProfileID)
	req.VolumeContext["csi.storage.k8s.io/serviceAccount.tokens"] = tokens(e.env.MintPodToken(t, "default", "default", "writer", firstTokenLife))
	firstExpiry := time.Now().Add(firstTokenLife)
	e.env.SetAccessTokenLifetime(2 * time.Second)
	if _, err := e.node.NodePublishVolume(ctx, req); err != nil {
		t.Fatal(err)
	}
	target := req.TargetPath
	e.write(target, "hello.txt", "hello world", emulatortest.WriterProfileID)
	e.assertVolumeMetrics(req.VolumeId, target)
	teamB := e.publish("team-b-pod", "team-b", teamBProfile)
	e.write(teamB.TargetPath, "b.txt", "written by team b", teamBProfile)
	// The server runs under the mounter, with the proxy settings of the
	// mounter's environment and its own OOM score.
	before := e.status(target)
	id := mountID(t, target)

	// A pod whose namespace the profile does not trust gets nothing.
	refused := e.request("reader", "readers", emulatortest.WriterProfileID)
	_, err := e.node.NodePublishVolume(ctx, refused)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "BXNIM0398E") {
		t.Fatalf("publish from an untrusted namespace = %v, want PermissionDenied naming BXNIM0398E", err)
	}

	w := startWriter(t, target, 200)
	for w.chunks.Load() < 20 {
		time.Sleep(50 * time.Millisecond)
	}
	// The plugin's container dies and comes back, twice.
	for round := 0; round < 2; round++ {
		e.killPlugin()
		time.Sleep(time.Second) // the pod keeps writing while no plugin runs
		e.startPlugin()
		for n := w.chunks.Load(); w.chunks.Load() < n+20; {
			time.Sleep(50 * time.Millisecond)
		}
	}
	// kubelet republishes through the new plugin instance with a renewed
	// token: it is swapped through the mounter, nothing is remounted,
	// writes go on past the first token's expiry.
	rotated := e.env.MintPodToken(t, "default", "default", "writer", time.Hour)
	req.VolumeContext["csi.storage.k8s.io/serviceAccount.tokens"] = tokens(rotated)
	if _, err := e.node.NodePublishVolume(ctx, req); err != nil {
		t.Fatalf("republish after the restart: %v", err)
	}
	if after := e.status(target); after.CredentialsDigest == before.CredentialsDigest {
		t.Error("the renewed token was not installed")
	}
	time.Sleep(time.Until(firstExpiry) + time.Second)
	auditStart := e.env.AuditLen()
	time.Sleep(4 * time.Second)
	small, sum, size, errs := w.finish()
	for _, err := range errs {
		t.Errorf("the pod saw an error: %v", err)
	}
	// The new token is in use: after the first one expired the server still
	// exchanged successfully, and nothing was refused.
	exchanged := 0
	for _, a := range e.env.AuditSince(auditStart) {
		if a.Service != "iam" || a.PrincipalType == "apikey" {
			continue
		}
		if a.Status != 200 {
			t.Errorf("IAM refused an exchange after the republish: %+v", a)
		}
		exchanged++
	}
	if exchanged == 0 {
		t.Error("no token exchange after the first token expired")
	}
	after := e.status(target)
	if after.PID != before.PID || !after.Started.Equal(before.Started) || mountID(t, target) != id {
		t.Errorf("the server or its mount changed: pid %d -> %d, mount %s -> %s", before.PID, after.PID, id, mountID(t, target))
	}
	// Every byte is in the bucket.
	for _, name := range small {
		if got := e.readObject(name); got != name+"\n" {
			t.Errorf("%s = %q", name, got)
		}
	}
	if len(small) < 10 {
		t.Errorf("only %d small files were written", len(small))
	}
	got := e.readObject("stream.bin")
	if int64(len(got)) != size || sha256.Sum256([]byte(got)) != sum {
		t.Errorf("stream.bin: %d bytes in the bucket, %d written, checksum match %v", len(got), size, sha256.Sum256([]byte(got)) == sum)
	}

	// The mounter's crash (not its container's) costs nothing either: its
	// supervisor restarts it and it adopts the running servers.
	mounterPIDs := nsChildren(t, e.mounter.PID())
	if len(mounterPIDs) == 0 {
		t.Fatal("no mounter process under the supervisor")
	}
	syscall.Kill(mounterPIDs[0], syscall.SIGKILL)
	waitFor(t, "the restarted mounter", func() bool {
		st, err := e.mounterC.Status(ctx, &mounterapi.StatusRequest{Target: target})
		return err == nil && st.State == mounterapi.StateHealthy && st.PID == before.PID
	})
	e.write(target, "after-mounter-restart.txt", "still serving", emulatortest.WriterProfileID)

	// A server killed anyway (kill -9, OOM) is reported with the reason.
	killed := e.status(teamB.TargetPath)
	killServer(t, e.mounter.PID(), killed.PID)
	waitFor(t, "the killed server to be reported", func() bool {
		h, err := e.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: teamB.VolumeId, VolumePublishPath: teamB.TargetPath})
		return err == nil && len(h.GetVolumeHealth().GetHealthStatuses()) == 1 &&
			h.GetVolumeHealth().GetHealthStatuses()[0].GetStatus() == csi.VolumeHealthErrorType_INACCESSIBLE
	})
	if err := e.unpublish(teamB); err != nil {
		t.Fatalf("unpublish of the dead volume: %v", err)
	}
	e.assertGone(teamB.TargetPath)

	if err := e.unpublish(req); err != nil {
		t.Fatalf("unpublish after the restarts: %v", err)
	}
	e.assertGone(target)
	if _, err := e.mounterC.Status(ctx, &mounterapi.StatusRequest{Target: target}); status.Code(err) != codes.NotFound {
		t.Errorf("the mounter still knows %s: %v", target, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(e.dir, "state")); len(entries) != 0 {
		t.Errorf("state directory still holds %d volumes (token files)", len(entries))
	}
	// The server's log lines are in the mounter's log, naming the volume.
	if ml := e.log("mounter.log"); !strings.Contains(ml, `volumeID="pv-writer"`) {
		t.Errorf("the mounter's log has no line of the writer's server:\n%s", ml)
	}
	e.killPlugin()
	e.assertNoTokenInLogs()
}

// nsChildren lists the children of the namespace's init (the supervisor)
// as seen from this namespace, for a process started by unshare --fork.
func nsChildren(t *testing.T, unsharePID int) []int {
	t.Helper()
	init := childrenOf(unsharePID)
	if len(init) != 1 {
		t.Fatalf("unshare %d has %d children", unsharePID, len(init))
	}
	return childrenOf(init[0])
}

func childrenOf(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var p int
		if _, err := fmt.Sscan(e.Name(), &p); err != nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		rest := string(data[bytes.LastIndexByte(data, ')')+2:])
		var state string
		var ppid int
		fmt.Sscan(rest, &state, &ppid)
		if ppid == pid {
			out = append(out, p)
		}
	}
	return out
}

// killServer SIGKILLs the server whose PID in the mounter's namespace is
// nsPID: it is found, from here, as a process whose NSpid ends in nsPID
// below the mounter's unshare.
func killServer(t *testing.T, unsharePID, nsPID int) {
	t.Helper()
	syscall.Kill(hostPIDOf(t, unsharePID, nsPID), syscall.SIGKILL)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
