package driver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
	"github.com/cosmount/cosmount/pkg/mounter/mountertest"
	"github.com/cosmount/cosmount/pkg/mounterapi"
)

// The tests in this file run the real driver (real mounter over its socket,
// real IAM verifier, real COS client) against the emulator. The mounter
// starts its fake cosmount (pkg/mounter/testdata/fakemount), which serves a
// real FUSE mount that shows its PID and a checksum of its token file.

var (
	fakeOnce   sync.Once
	fakeBinary string
	fakeErr    error
)

func buildFakeCosmount(t *testing.T) string {
	t.Helper()
	fakeOnce.Do(func() {
		dir, err := os.MkdirTemp("", "driver-fake-cosmount-")
		if err != nil {
			fakeErr = err
			return
		}
		fakeBinary = filepath.Join(dir, "cosmount")
		out, err := exec.Command("go", "build", "-o", fakeBinary, "../mounter/testdata/fakemount").CombinedOutput()
		if err != nil {
			fakeErr = fmt.Errorf("build fake cosmount: %v\n%s", err, out)
		}
	})
	if fakeErr != nil {
		t.Fatal(fakeErr)
	}
	return fakeBinary
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, b := range []string{fakeBinary, cosmountBinary} {
		if b != "" {
			os.RemoveAll(filepath.Dir(b))
		}
	}
	os.Exit(code)
}

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

// realPlugin is one run of the driver over a socket; stop ends it the way a
// killed container would leave things: mounts and servers keep running.
type realPlugin struct {
	node       csi.NodeClient
	controller csi.ControllerClient
	stop       func()
}

func startRealPlugin(t *testing.T, opts Options) *realPlugin {
	t.Helper()
	deps := Deps{Verifier: NewIAMVerifier(), Stores: NewCOSStores(opts)}
	if opts.runsNode() {
		c, err := mounterapi.Dial(opts.MounterEndpoint)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		deps.Mounter = c
	}
	d, err := New(opts, deps)
	if err != nil {
		t.Fatal(err)
	}
	sock, _ := mounterapi.SocketPath(opts.Endpoint)
	conn, stop := serve(t, d, sock)
	return &realPlugin{node: csi.NewNodeClient(conn), controller: csi.NewControllerClient(conn), stop: stop}
}

func readThrough(t *testing.T, target, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(target, name))
	if err != nil {
		t.Fatalf("read %s through the mount: %v", name, err)
	}
	return strings.TrimSpace(string(b))
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestDriverAgainstEmulator(t *testing.T) {
	needFUSE(t)
	binary := buildFakeCosmount(t)
	env := emulatortest.Start(t)
	ctx := context.Background()

	dir, err := os.MkdirTemp("", "csi-real-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	opts := DefaultOptions()
	opts.Endpoint = "unix://" + filepath.Join(dir, "csi.sock")
	opts.NodeID = "node-1"
	opts.IAMEndpoint = env.IAMURL
	opts.AllowInsecureHTTP = true // the emulator speaks plain http on loopback
	opts.AllowedCOSEndpoints = []string{env.COSURL}
	opts.MounterEndpoint = mountertest.Start(t, dir, binary).Endpoint
	stateDir := filepath.Join(dir, "state")
	opts.ControllerProfile = emulatortest.WriterProfileID
	opts.ControllerTokenFile = env.WritePodToken(t, dir, "default", "default", "controller", time.Hour)
	plugin := startRealPlugin(t, opts)

	// Provision a bucket as the controller's own trusted profile.
	params := map[string]string{
		attrEndpoint:          env.COSURL,
		attrProfileID:         emulatortest.WriterProfileID,
		attrServiceInstanceID: env.ServiceInstanceID,
		keyPVCNamespace:       "default",
		keyPVCName:            "hello",
	}
	auditStart := env.AuditLen()
	created, err := plugin.controller.CreateVolume(ctx, createReq("pvc-e2e-1", params, 1<<30))
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	vol := created.GetVolume()
	sawCreate := false
	for _, e := range env.AuditSince(auditStart) {
		if e.Operation == "CreateBucket" && e.Status == 200 && e.PrincipalID == emulatortest.WriterProfileID && e.AuthScheme == "bearer" {
			sawCreate = true
		}
	}
	if !sawCreate {
		t.Errorf("no bearer CreateBucket by %s in the audit", emulatortest.WriterProfileID)
	}

	// Publish the way kubelet does, with the pod's minted token.
	publish := func(target, namespace string) (*csi.NodePublishVolumeRequest, error) {
		vctx := map[string]string{}
		for k, v := range vol.GetVolumeContext() {
			vctx[k] = v
		}
		vctx[keyPodNamespace], vctx[keyPodName], vctx[keySAName] = namespace, "pod-"+namespace, "default"
		vctx[keyTokens] = tokensJSON("iam", env.MintPodToken(t, namespace, "default", "pod-"+namespace, time.Hour))
		req := &csi.NodePublishVolumeRequest{
			VolumeId: vol.GetVolumeId(), TargetPath: target, VolumeContext: vctx,
			VolumeCapability: mountCapability(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER),
		}
		_, err := plugin.node.NodePublishVolume(ctx, req)
		return req, err
	}
	target := filepath.Join(dir, "pods", "writer", "mount")
	t.Cleanup(func() { cleanupTarget(target) })
	req, err := publish(target, "default")
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	pid := readThrough(t, target, "pid")
	if got := readThrough(t, target, "credsum"); got != sha(tokenOf(t, req)) {
		t.Error("the server does not see the pod's token")
	}

	// Republish with a rotated token: same server, new token file.
	rotated := env.MintPodToken(t, "default", "default", "pod-default", time.Hour)
	req.VolumeContext[keyTokens] = tokensJSON("iam", rotated)
	if _, err := plugin.node.NodePublishVolume(ctx, req); err != nil {
		t.Fatalf("republish: %v", err)
	}
	if got := readThrough(t, target, "pid"); got != pid {
		t.Errorf("republish restarted the server: pid %s -> %s", pid, got)
	}
	if got := readThrough(t, target, "credsum"); got != sha(rotated) {
		t.Error("republish did not install the rotated token")
	}

	// A pod whose namespace the profile does not trust: refused, nothing mounted.
	refused := filepath.Join(dir, "pods", "reader", "mount")
	t.Cleanup(func() { cleanupTarget(refused) })
	_, err = publish(refused, "readers")
	if code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "BXNIM0398E") {
		t.Fatalf("publish from an untrusted namespace = %v, want PermissionDenied naming BXNIM0398E", err)
	}
	if _, err := os.Stat(refused); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused target exists: %v", err)
	}

	// A server that crashes is reported and its dead mount cleaned by unpublish.
	crashed := filepath.Join(dir, "pods", "crash", "mount")
	t.Cleanup(func() { cleanupTarget(crashed) })
	if _, err := publish(crashed, "default"); err != nil {
		t.Fatal(err)
	}
	crashedPID, _ := strconv.Atoi(readThrough(t, crashed, "pid"))
	syscall.Kill(crashedPID, syscall.SIGKILL)
	waitFor(t, "the killed server to be reported", func() bool {
		h, err := plugin.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: vol.GetVolumeId(), VolumePublishPath: crashed})
		return err == nil && len(h.GetVolumeHealth().GetHealthStatuses()) == 1 &&
			h.GetVolumeHealth().GetHealthStatuses()[0].GetStatus() == csi.VolumeHealthErrorType_INACCESSIBLE
	})
	if _, err := plugin.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: vol.GetVolumeId(), TargetPath: crashed}); err != nil {
		t.Fatalf("unpublish of a dead mount: %v", err)
	}
	assertNothingLeft(t, crashed, stateDir, crashedPID)

	// The plugin restarts; the volume keeps being served by the mounter,
	// and unpublish through the new instance stops the server.
	plugin.stop()
	if got := readThrough(t, target, "pid"); got != pid {
		t.Fatal("the server did not survive the plugin")
	}
	plugin = startRealPlugin(t, opts)
	if _, err := plugin.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: vol.GetVolumeId(), TargetPath: target}); err != nil {
		t.Fatalf("unpublish after restart: %v", err)
	}
	n, _ := strconv.Atoi(pid)
	assertNothingLeft(t, target, stateDir, n)

	if _, err := plugin.controller.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol.GetVolumeId()}); err != nil {
		t.Fatalf("DeleteVolume: %v", err)
	}
	_, err = plugin.controller.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{
		VolumeId: vol.GetVolumeId(), VolumeCapabilities: []*csi.VolumeCapability{mountCapability(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)},
	})
	if code(err) != codes.NotFound {
		t.Errorf("the bucket survived DeleteVolume: %v", err)
	}
}

func TestControllerPrefixModeWithAPIKey(t *testing.T) {
	env := emulatortest.Start(t)
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "csi-ctrl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	opts := DefaultOptions()
	opts.Mode = ModeController
	opts.Endpoint = "unix://" + filepath.Join(dir, "csi.sock")
	opts.IAMEndpoint = env.IAMURL
	opts.AllowInsecureHTTP = true // the emulator speaks plain http on loopback
	opts.AllowedCOSEndpoints = []string{env.COSURL}
	plugin := startRealPlugin(t, opts)

	params := map[string]string{
		attrEndpoint: env.COSURL, attrBucket: env.Bucket, attrProvisioning: "prefix", attrPrefix: "volumes",
		attrProfileName: emulatortest.WriterProfileName,
	}
	req := createReq("pvc-prefix-1", params, 0)
	if _, err := plugin.controller.CreateVolume(ctx, req); code(err) != codes.FailedPrecondition {
		t.Errorf("CreateVolume without any controller identity = %v, want FailedPrecondition", err)
	}
	req.Secrets = map[string]string{secretAPIKey: env.APIKey()}
	resp, err := plugin.controller.CreateVolume(ctx, req)
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	id := resp.GetVolume().GetVolumeId()
	if !strings.HasPrefix(id, "prefix:"+env.Bucket+"/volumes/pvc-prefix-1@") {
		t.Errorf("volume ID %q", id)
	}
	valid := &csi.ValidateVolumeCapabilitiesRequest{
		VolumeId: id, Secrets: req.Secrets,
		VolumeCapabilities: []*csi.VolumeCapability{mountCapability(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)},
	}
	if v, err := plugin.controller.ValidateVolumeCapabilities(ctx, valid); err != nil || v.GetConfirmed() == nil {
		t.Fatalf("ValidateVolumeCapabilities = %v, %v", v, err)
	}
	if _, err := plugin.controller.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: req.Secrets}); err != nil {
		t.Fatalf("DeleteVolume: %v", err)
	}
	if _, err := plugin.controller.ValidateVolumeCapabilities(ctx, valid); code(err) != codes.NotFound {
		t.Errorf("prefix marker survived DeleteVolume: %v", err)
	}
}

func tokenOf(t *testing.T, req *csi.NodePublishVolumeRequest) string {
	t.Helper()
	tok, err := podToken(nil, req.GetVolumeContext(), "iam")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// assertNothingLeft checks that no mount, server process or state remains.
func assertNothingLeft(t *testing.T, target, stateDir string, pid int) {
	t.Helper()
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("target %s still exists: %v", target, err)
	}
	if mounts, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mounts), " "+target+" ") {
		t.Errorf("%s is still mounted", target)
	}
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(data), ") Z ") {
		t.Errorf("server %d still runs", pid)
	}
	entries, _ := os.ReadDir(stateDir)
	for _, e := range entries {
		if rec, _ := os.ReadFile(filepath.Join(stateDir, e.Name(), "volume.json")); strings.Contains(string(rec), target) {
			t.Errorf("state of %s left in %s", target, e.Name())
		}
	}
}

// cleanupTarget removes a mount a failed test left behind.
func cleanupTarget(target string) {
	exec.Command("fusermount3", "-u", "-z", target).Run()
	syscall.Unmount(target, syscall.MNT_DETACH)
}
