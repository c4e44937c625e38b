package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/emulator/config"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
	"github.com/cosmount/cosmount/pkg/iam"
	"github.com/cosmount/cosmount/pkg/mounter"
)

// This end-to-end test drives the cosmount-csi binary over its socket
// exactly as kubelet does, with the real cosmount server behind it and the
// emulator's IAM and COS behind that.

const teamBProfile = "Profile-team-b"

type e2e struct {
	t        *testing.T
	env      *emulatortest.Env
	dir      string
	csiBin   string
	args     []string
	plugin   *exec.Cmd
	node     csi.NodeClient
	conn     *grpc.ClientConn
	logFiles []string
}

func TestKubeletLikeEndToEnd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("no fusermount3 (apt-get install fuse3)")
	}
	dir, err := os.MkdirTemp("", "csi-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bins := map[string]string{"cosmount-csi": ".", "cosmount": "../cosmount"}
	for name, pkg := range bins {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "bin", name), pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	env := emulatortest.Start(t, emulatortest.WithConfig(func(c *config.Config) {
		c.Profiles = append(c.Profiles, config.Profile{
			ID: teamBProfile, Name: "team-b-writer",
			Links:    []config.Link{{Cluster: emulatortest.Cluster, Namespace: "team-b", ServiceAccount: "default"}},
			Policies: []config.Policy{{Role: config.RoleWriter}},
		})
	}))
	e := &e2e{t: t, env: env, dir: dir, csiBin: filepath.Join(dir, "bin", "cosmount-csi")}
	e.args = []string{
		"--endpoint", "unix://" + filepath.Join(dir, "csi.sock"), "--mode", "node", "--node-id", "node-1",
		"--iam-endpoint", env.IAMURL, "--state-dir", filepath.Join(dir, "state"),
		"--cosmount-binary", filepath.Join(dir, "bin", "cosmount"), "--v", "5",
		"--metrics-address", "127.0.0.1:0",
	}
	t.Cleanup(func() {
		// After a failure: stop what the plugin left running, by the PIDs it recorded.
		m, err := mounter.New(mounter.Options{StateDir: filepath.Join(dir, "state"), Binary: "unused", StopTimeout: 20 * time.Second})
		if err != nil {
			return
		}
		recs, _ := m.Records()
		for _, r := range recs {
			if err := m.Unmount(context.Background(), r.Target); err != nil {
				t.Errorf("cleanup of %s: %v", r.Target, err)
			}
		}
	})
	e.startPlugin()
	t.Cleanup(e.killPlugin)
	ctx := context.Background()

	writer := e.publish("writer", "default", emulatortest.WriterProfileID)
	e.write(writer.TargetPath, "hello.txt", "hello world", emulatortest.WriterProfileID)
	e.assertVolumeMetrics(writer.VolumeId, writer.TargetPath)
	teamB := e.publish("team-b-pod", "team-b", teamBProfile)
	e.write(teamB.TargetPath, "b.txt", "written by team b", teamBProfile)

	// A pod whose namespace the profile does not trust gets nothing.
	refused := e.request("reader", "readers", emulatortest.WriterProfileID)
	_, err = e.node.NodePublishVolume(ctx, refused)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "BXNIM0398E") {
		t.Fatalf("publish from an untrusted namespace = %v, want PermissionDenied naming BXNIM0398E", err)
	}
	if _, err := os.Stat(refused.TargetPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused target exists: %v", err)
	}

	// kubelet republishes with a rotated token while access tokens live 2 s:
	// the same server keeps writing, nothing is remounted.
	pid := e.serverPID(writer.TargetPath)
	env.SetAccessTokenLifetime(2 * time.Second)
	writer.VolumeContext["csi.storage.k8s.io/serviceAccount.tokens"] = tokens(env.MintPodToken(t, "default", "default", "writer", time.Hour))
	if _, err := e.node.NodePublishVolume(ctx, writer); err != nil {
		t.Fatalf("republish: %v", err)
	}
	time.Sleep(3 * time.Second)
	e.write(writer.TargetPath, "after-rotation.txt", "still hello", emulatortest.WriterProfileID)
	if got := e.serverPID(writer.TargetPath); got != pid {
		t.Errorf("republish replaced the server: pid %d -> %d", pid, got)
	}
	e.assertNoTokenInLogs(filepath.Join(dir, "state", "*", "cosmount.log"))

	// The plugin is killed and restarted; unpublish still cleans up.
	e.killPlugin()
	e.startPlugin()
	pids := map[string]int{writer.TargetPath: pid, teamB.TargetPath: e.serverPID(teamB.TargetPath)}
	for _, req := range []*csi.NodePublishVolumeRequest{writer, teamB} {
		if _, err := e.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath}); err != nil {
			t.Fatalf("unpublish %s after restart: %v", req.TargetPath, err)
		}
		e.assertGone(req.TargetPath, pids[req.TargetPath])
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "state")); len(entries) != 0 {
		t.Errorf("state directory still holds %d volumes (token files)", len(entries))
	}
	if got := e.readObject("hello.txt"); got != "hello world\n" {
		t.Errorf("hello.txt = %q", got)
	}
	e.killPlugin()
	e.assertNoTokenInLogs(e.logFiles...)
}

func tokens(tok string) string {
	b, _ := json.Marshal(map[string]any{"iam": map[string]string{"token": tok, "expirationTimestamp": time.Now().Add(time.Hour).Format(time.RFC3339)}})
	return string(b)
}

// request is the NodePublishVolume kubelet sends for a pod of namespace ns
// using a static PV of the emulator's bucket through profile.
func (e *e2e) request(pod, ns, profile string) *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{
		VolumeId:   "pv-" + pod,
		TargetPath: filepath.Join(e.dir, "kubelet", "pods", pod, "volumes", "kubernetes.io~csi", "pv-"+pod, "mount"),
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
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
	e.t.Cleanup(func() {
		exec.Command("fusermount3", "-u", "-z", req.TargetPath).Run()
	})
	if _, err := e.node.NodePublishVolume(context.Background(), req); err != nil {
		e.t.Fatalf("publish for %s/%s: %v", ns, pod, err)
	}
	return req
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

func (e *e2e) readObject(key string) string {
	e.t.Helper()
	ex, err := iam.NewClient(iam.ClientOptions{BaseURL: e.env.IAMURL})
	if err != nil {
		e.t.Fatal(err)
	}
	src, err := iam.NewAPIKeySource(ex, e.env.APIKey())
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := cos.New(cos.Options{Endpoint: e.env.COSURL, UsePathStyle: true, Tokens: src})
	if err != nil {
		e.t.Fatal(err)
	}
	body, _, err := c.GetObject(context.Background(), e.env.Bucket, key, cos.GetOptions{})
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

func (e *e2e) startPlugin() {
	e.t.Helper()
	logPath := filepath.Join(e.dir, fmt.Sprintf("plugin-%d.log", len(e.logFiles)))
	logf, err := os.Create(logPath)
	if err != nil {
		e.t.Fatal(err)
	}
	defer logf.Close()
	e.logFiles = append(e.logFiles, logPath)
	cmd := exec.Command(e.csiBin, e.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.plugin = cmd
	sock := filepath.Join(e.dir, "csi.sock")
	deadline := time.Now().Add(60 * time.Second)
	for {
		// The previous instance's socket file may linger until the new one replaces it.
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			data, _ := os.ReadFile(logPath)
			e.t.Fatalf("plugin socket did not appear; log:\n%s", data)
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

// killPlugin SIGKILLs the plugin process (by its PID), like a crash.
func (e *e2e) killPlugin() {
	if e.plugin == nil {
		return
	}
	e.conn.Close()
	e.plugin.Process.Signal(syscall.SIGKILL)
	e.plugin.Wait()
	e.plugin = nil
}

// serverPID is the PID recorded for target's server in the state directory.
func (e *e2e) serverPID(target string) int {
	e.t.Helper()
	recs, _ := filepath.Glob(filepath.Join(e.dir, "state", "*", "volume.json"))
	for _, r := range recs {
		var rec struct {
			Target string `json:"target"`
			PID    int    `json:"pid"`
		}
		data, err := os.ReadFile(r)
		if err == nil && json.Unmarshal(data, &rec) == nil && rec.Target == target {
			return rec.PID
		}
	}
	e.t.Fatalf("no server recorded for %s", target)
	return 0
}

func (e *e2e) assertGone(target string, pid int) {
	e.t.Helper()
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		e.t.Errorf("target %s still exists: %v", target, err)
	}
	if mounts, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(mounts, []byte(" "+target+" ")) {
		e.t.Errorf("%s is still mounted", target)
	}
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !bytes.Contains(stat, []byte(") Z ")) {
		e.t.Errorf("server %d still runs", pid)
	}
}

// assertNoTokenInLogs checks files (or globs) for anything JWT-shaped.
func (e *e2e) assertNoTokenInLogs(patterns ...string) {
	e.t.Helper()
	n := 0
	for _, p := range patterns {
		files, _ := filepath.Glob(p)
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				e.t.Fatal(err)
			}
			n++
			if bytes.Contains(data, []byte("eyJ")) {
				e.t.Errorf("%s contains a token", f)
			}
		}
	}
	if n == 0 {
		e.t.Errorf("no log files matched %q", patterns)
	}
}
