package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cosmount/cosmount/pkg/emulator"
	"github.com/cosmount/cosmount/pkg/mounterapi"
)

// The cast of the story. The emulator's default configuration provides the
// bucket, the trusted profile and its trust in default/default of
// test-cluster.
const (
	bucket        = emulator.DefaultBucket
	profileID     = emulator.DefaultWriterProfileID
	audience      = "iam"
	nodeID        = "demo-node"
	objectKey     = "hello.txt"
	objectContent = "hello world\n"
	// A namespace that no trusted profile trusts.
	untrustedNamespace = "other-team"
)

// Generous bounds: the demo may share a busy machine.
const (
	startTimeout   = 60 * time.Second
	publishTimeout = 2 * time.Minute
	stopTimeout    = 30 * time.Second
)

// demo holds what the steps set up, so that cleanup can undo it whatever
// step failed.
type demo struct {
	out  io.Writer
	bin  string // directory of the three binaries
	work string // temporary: emulator data, kubelet dir, plugin state, logs

	emulator       *proc
	iamURL, cosURL string

	mounter   *proc
	mounterC  *mounterapi.Client
	plugin    *proc
	conn      *grpc.ClientConn
	node      csi.NodeClient
	published []*csi.NodePublishVolumeRequest // to unpublish if the demo stops early

	writer      *pod
	writerReq   *csi.NodePublishVolumeRequest
	auditMark   int // audit entries before the publish
	writeMark   int // audit entries before the pod's write
	serverPID   int
	serverToken string // the per-volume token file the mounter wrote
}

// run tells the whole story on out and returns nil only if every step and
// the cleanup succeeded. binDir holds the binaries; empty builds them.
func run(ctx context.Context, out io.Writer, binDir string) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("the demo mounts a FUSE file system and needs root")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return errors.New("fusermount3 is missing: apt-get install -y fuse3 (make demo does it)")
	}
	work, err := os.MkdirTemp("", "cosmount-demo-")
	if err != nil {
		return err
	}
	d := &demo{out: out, bin: binDir, work: work}
	defer func() {
		if cerr := d.cleanup(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: %w", cerr))
		}
		if err == nil {
			fmt.Fprintf(out, "\nDEMO PASSED: the pod's token became bearer PUTs by %s, and nothing is left behind.\n", profileID)
		}
	}()
	fmt.Fprintf(out, "cosmount demo: a pod writes to an IBM Cloud Object Storage bucket with its own identity.\nWorking directory: %s\n", work)
	steps := []struct {
		title string
		run   func(context.Context) error
	}{
		{"Build the three binaries", d.build},
		{"Start the emulator: IBM Cloud IAM and Object Storage on 127.0.0.1", d.startEmulator},
		{"Mint the pod's projected service-account token (what kubelet requests for the pod)", d.mintWriterToken},
		{"Start the node's mounter, which owns every FUSE server on the node (its own DaemonSet in a cluster)", d.startMounter},
		{"Start the node plugin and publish the volume, as kubelet does", d.publish},
		{"The pod writes to its volume", d.podWrites},
		{"Read the object back through the COS API, and see who wrote it", d.readBack},
		{"A pod of a namespace the profile does not trust is refused", d.refused},
		{"Unpublish, stop everything, check that nothing is left", d.teardown},
	}
	for i, s := range steps {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted before step %d", i+1)
		}
		fmt.Fprintf(out, "\n[%d/%d] %s\n", i+1, len(steps), s.title)
		if err := s.run(ctx); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted during step %d (%s): %w", i+1, s.title, err)
			}
			return fmt.Errorf("step %d (%s): %w", i+1, s.title, err)
		}
	}
	return nil
}

// say prints one indented line of a step.
func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "    "+format+"\n", args...)
}

func (d *demo) binary(name string) string { return filepath.Join(d.bin, name) }
func (d *demo) stateDir() string          { return filepath.Join(d.work, "mounter-state") }
func (d *demo) mounterSock() string       { return filepath.Join(d.work, "mounter.sock") }
func (d *demo) kubeletDir() string        { return filepath.Join(d.work, "kubelet") }

func (d *demo) build(ctx context.Context) error {
	if d.bin == "" {
		d.bin = filepath.Join(d.work, "bin")
		d.say("$ go build -o %s/ ./cmd/cosmount ./cmd/cosmount-csi ./cmd/cosmount-emulator", d.bin)
		if err := buildBinaries(ctx, d.bin); err != nil {
			return err
		}
	} else {
		abs, err := filepath.Abs(d.bin)
		if err != nil {
			return err
		}
		d.bin = abs
		d.say("using the binaries of `make build` in %s", d.bin)
	}
	versionArgs := map[string]string{"cosmount": "version", "cosmount-csi": "--version", "cosmount-emulator": "version"}
	for _, b := range binaries {
		out, err := exec.CommandContext(ctx, d.binary(b), versionArgs[b]).Output()
		if err != nil {
			return fmt.Errorf("%s %s: %w", d.binary(b), versionArgs[b], err)
		}
		d.say("%-18s %s", b, strings.TrimSpace(string(out)))
	}
	return nil
}

func (d *demo) startEmulator(ctx context.Context) error {
	data := filepath.Join(d.work, "emulator-data")
	ready := filepath.Join(d.work, "emulator.ready")
	p, err := startProc("cosmount-emulator", filepath.Join(d.work, "emulator.log"), d.binary("cosmount-emulator"),
		"serve", "--data-dir", data, "--iam-listen", "127.0.0.1:0", "--cos-listen", "127.0.0.1:0", "--ready-file", ready)
	if err != nil {
		return err
	}
	d.emulator = p
	var line string
	err = waitFor(ctx, startTimeout, "the emulator to listen", func() (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("the emulator exited: %v%s", p.Err(), p.logTail())
		}
		b, err := os.ReadFile(ready)
		line = string(b)
		return err == nil, nil
	})
	if err != nil {
		return err
	}
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "iam="); ok {
			d.iamURL = v
		} else if v, ok := strings.CutPrefix(f, "cos="); ok {
			d.cosURL = v
		}
	}
	if d.iamURL == "" || d.cosURL == "" {
		return fmt.Errorf("unexpected ready line %q", line)
	}
	d.say("$ cosmount-emulator serve --data-dir %s --iam-listen 127.0.0.1:0 --cos-listen 127.0.0.1:0", data)
	d.say("pid %d; IAM at %s (POST /identity/token), COS at %s (S3 API, bucket %s)", p.pid(), d.iamURL, d.cosURL, bucket)

	// The configuration the emulator runs is its embedded default; show the
	// trusted profile the pod will go through.
	cfgYAML, err := exec.CommandContext(ctx, d.binary("cosmount-emulator"), "print-config").Output()
	if err != nil {
		return fmt.Errorf("print-config: %w", err)
	}
	cfg, err := emulator.ParseConfig(cfgYAML, data)
	if err != nil {
		return err
	}
	for _, prof := range cfg.Profiles {
		if prof.ID != profileID {
			continue
		}
		d.say("trusted profile %s (%q):", prof.ID, prof.Name)
		trusted := false
		for _, l := range prof.Links {
			d.say("  trusts   cluster %s, namespace %s, service account %s", l.Cluster, l.Namespace, l.ServiceAccount)
			trusted = trusted || (l.Cluster == emulator.DefaultCluster && l.Namespace == "default" && l.ServiceAccount == "default")
		}
		for _, pol := range prof.Policies {
			scope := "every bucket of the account"
			if pol.Bucket != "" {
				scope = "bucket " + pol.Bucket
			}
			d.say("  policy   role %s on %s", pol.Role, scope)
		}
		if !trusted {
			return fmt.Errorf("profile %s does not trust default/default of %s", profileID, emulator.DefaultCluster)
		}
		return nil
	}
	return fmt.Errorf("the emulator's configuration has no profile %s", profileID)
}

// mintToken has the emulator sign a projected token for p, as the cluster's
// service-account issuer would, into p.tokenFile (mode 0600), and returns
// its claims.
func (d *demo) mintToken(ctx context.Context, p *pod) (*podClaims, error) {
	args := []string{"mint-token", "--data-dir", filepath.Join(d.work, "emulator-data"),
		"--namespace", p.namespace, "--service-account", p.serviceAccount, "--pod", p.name,
		"--audience", audience, "--lifetime", "1h", "--out", p.tokenFile}
	if out, err := exec.CommandContext(ctx, d.binary("cosmount-emulator"), args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mint-token: %v: %s", err, out)
	}
	d.say("$ cosmount-emulator %s", strings.Join(args, " "))
	claims, n, err := readClaims(p.tokenFile)
	if err != nil {
		return nil, err
	}
	if err := claims.check(p, audience); err != nil {
		return nil, err
	}
	p.uid = claims.Kubernetes.Pod.UID
	if p.uid == "" {
		return nil, errors.New("the token names no pod UID")
	}
	d.say("wrote a %d-byte JWT (mode 0600). The token is a secret and is never printed; its claims:", n)
	return claims, nil
}

func (d *demo) mintWriterToken(ctx context.Context) error {
	d.writer = &pod{name: "demo-pod", namespace: "default", serviceAccount: "default",
		tokenFile: filepath.Join(d.work, "demo-pod.token"), volumeID: "pv-demo"}
	c, err := d.mintToken(ctx, d.writer)
	if err != nil {
		return err
	}
	exp := time.Unix(c.Expiry, 0)
	d.say("  iss            %s", c.Issuer)
	d.say("  sub            %s", c.Subject)
	d.say("  aud            %s", strings.Join(c.Audience, ","))
	d.say("  namespace      %s", c.Kubernetes.Namespace)
	d.say("  serviceaccount %s", c.Kubernetes.ServiceAccount.Name)
	d.say("  pod            %s (uid %s)", c.Kubernetes.Pod.Name, c.Kubernetes.Pod.UID)
	d.say("  exp            %s (in %s)", exp.UTC().Format(time.RFC3339), time.Until(exp).Round(time.Minute))
	d.writerReq, err = volume{bucket, d.cosURL, d.iamURL, profileID}.publishRequest(d.kubeletDir(), d.writer, c, audience)
	return err
}

func (d *demo) publish(ctx context.Context) error {
	sock := filepath.Join(d.work, "csi.sock")
	args := []string{"--endpoint", "unix://" + sock, "--mode", "node", "--node-id", nodeID,
		"--iam-endpoint", d.iamURL, "--mounter-endpoint", "unix://" + d.mounterSock(), "--v", "2",
		// The emulator speaks plain http on loopback; a cluster allows only https.
		"--allow-insecure-http", "--allowed-cos-endpoints", d.cosURL}
	p, err := startProc("cosmount-csi", filepath.Join(d.work, "cosmount-csi.log"), d.binary("cosmount-csi"), args...)
	if err != nil {
		return err
	}
	d.plugin = p
	d.say("$ cosmount-csi %s", strings.Join(args, " "))
	err = waitFor(ctx, startTimeout, "the plugin's socket", func() (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("the plugin exited: %v%s", p.Err(), p.logTail())
		}
		c, err := net.Dial("unix", sock)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	})
	if err != nil {
		return err
	}
	if d.conn, err = grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return err
	}
	d.node = csi.NewNodeClient(d.conn)
	rpcCtx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	plugin, err := csi.NewIdentityClient(d.conn).GetPluginInfo(rpcCtx, &csi.GetPluginInfoRequest{})
	if err != nil {
		return fmt.Errorf("GetPluginInfo: %w", err)
	}
	d.say("pid %d; GetPluginInfo -> %s %s", p.pid(), plugin.GetName(), plugin.GetVendorVersion())
	info, err := d.node.NodeGetInfo(rpcCtx, &csi.NodeGetInfoRequest{})
	if err != nil {
		return fmt.Errorf("NodeGetInfo: %w", err)
	}
	if info.GetNodeId() != nodeID {
		return fmt.Errorf("NodeGetInfo: node %q, want %q", info.GetNodeId(), nodeID)
	}
	d.say("NodeGetInfo -> node_id %s", info.GetNodeId())

	req := d.writerReq
	d.say("NodePublishVolume volume_id=%s target=%s", req.VolumeId, req.TargetPath)
	for _, l := range describeContext(req.VolumeContext) {
		d.say("  %s", l)
	}
	if d.auditMark, err = d.auditLen(ctx); err != nil {
		return err
	}
	d.published = append(d.published, req)
	start := time.Now()
	if _, err := d.node.NodePublishVolume(rpcCtx, req); err != nil {
		return fmt.Errorf("NodePublishVolume: %w%s", err, p.logTail())
	}
	mounts, err := mountsUnder(req.TargetPath)
	if err != nil {
		return err
	}
	fstype, ok := mounts[req.TargetPath]
	if !ok {
		return fmt.Errorf("NodePublishVolume succeeded but %s is not a mount point", req.TargetPath)
	}
	d.say("-> OK after %s; the target is a %s mount", time.Since(start).Round(time.Millisecond), fstype)
	if err := d.findServer(req.TargetPath); err != nil {
		return err
	}
	d.say("   served by cosmount pid %d, a child of the mounter (pid %d), not of the plugin (pid %d):", d.serverPID, d.mounter.pid(), d.plugin.pid())
	d.say("   the plugin can crash, restart or be upgraded and the mount stays; the server reads the pod's token from %s (mode 0600)", d.serverToken)
	entries, err := auditEntries(ctx, d.cosURL, d.auditMark)
	if err != nil {
		return err
	}
	d.say("   IAM audit (the plugin's check of the pod's token, then the cosmount server's own exchange):")
	for _, e := range entries {
		if e.Service == "iam" {
			d.say("     %s", formatAudit(e))
		}
	}
	return nil
}

// startMounter starts the node's mounter and waits until it answers.
func (d *demo) startMounter(ctx context.Context) error {
	args := []string{"--mode", "mounter", "--mounter-endpoint", "unix://" + d.mounterSock(), "--state-dir", d.stateDir(),
		"--cosmount-binary", d.binary("cosmount"), "--v", "2"}
	p, err := startProc("cosmount-mounter", filepath.Join(d.work, "cosmount-mounter.log"), d.binary("cosmount-csi"), args...)
	if err != nil {
		return err
	}
	d.mounter = p
	d.say("$ cosmount-csi %s", strings.Join(args, " "))
	if d.mounterC, err = mounterapi.Dial("unix://" + d.mounterSock()); err != nil {
		return err
	}
	readyCtx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	v, err := d.mounterC.WaitReady(readyCtx)
	if err != nil {
		return fmt.Errorf("the mounter does not answer: %w%s", err, p.logTail())
	}
	d.say("pid %d; answers API %s on %s", p.pid(), v.API, d.mounterSock())
	return nil
}

// findServer asks the mounter for the server of target, checks that it is
// the mounter's child and that its token file is private.
func (d *demo) findServer(target string) error {
	st, err := d.mounterC.Status(context.Background(), &mounterapi.StatusRequest{Target: target})
	if err != nil {
		return fmt.Errorf("the mounter does not know %s: %w", target, err)
	}
	if !processRuns(st.PID) {
		return fmt.Errorf("the server of %s (pid %d) does not run", target, st.PID)
	}
	if ppid := parentPID(st.PID); ppid != d.mounter.pid() {
		return fmt.Errorf("the server of %s (pid %d) is a child of pid %d, not of the mounter (pid %d)", target, st.PID, ppid, d.mounter.pid())
	}
	d.serverPID = st.PID
	files, _ := filepath.Glob(filepath.Join(d.stateDir(), "*", "token"))
	if len(files) != 1 {
		return fmt.Errorf("want one token file in %s, found %d", d.stateDir(), len(files))
	}
	fi, err := os.Stat(files[0])
	if err != nil {
		return err
	}
	if fi.Mode().Perm() != 0o600 {
		return fmt.Errorf("token file %s has mode %v, want 0600", files[0], fi.Mode().Perm())
	}
	d.serverToken = files[0]
	return nil
}

func (d *demo) auditLen(ctx context.Context) (int, error) {
	entries, err := auditEntries(ctx, d.cosURL, 0)
	return len(entries), err
}
