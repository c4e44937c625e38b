package driver

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
	"github.com/cosmount/cosmount/pkg/iam"
	"github.com/cosmount/cosmount/pkg/mounter"
	"github.com/cosmount/cosmount/pkg/mounter/mountertest"
)

var (
	cosmountOnce   sync.Once
	cosmountBinary string
	cosmountErr    error
)

// buildCosmount builds the real FUSE server, ./cmd/cosmount.
func buildCosmount(t *testing.T) string {
	t.Helper()
	cosmountOnce.Do(func() {
		dir, err := os.MkdirTemp("", "driver-cosmount-")
		if err != nil {
			cosmountErr = err
			return
		}
		cosmountBinary = filepath.Join(dir, "cosmount")
		out, err := exec.Command("go", "build", "-o", cosmountBinary, "../../cmd/cosmount").CombinedOutput()
		if err != nil {
			cosmountErr = errors.New("build cmd/cosmount: " + err.Error() + "\n" + string(out))
		}
	})
	if cosmountErr != nil {
		t.Fatal(cosmountErr)
	}
	return cosmountBinary
}

// TestPodWritesThroughRealServer is the seed's story with the real cosmount
// server: a pod's token, a publish, `echo "hello world" > hello.txt` by a
// real shell, and the object in COS written by a bearer PUT of the pod's
// trusted profile; then a republish with a rotated token and 2 s access
// tokens keeps writing through the same server process.
func TestPodWritesThroughRealServer(t *testing.T) {
	needFUSE(t)
	binary := buildCosmount(t)
	env := emulatortest.Start(t)
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "csi-cosmount-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	opts := DefaultOptions()
	opts.Mode = ModeNode
	opts.Endpoint = "unix://" + filepath.Join(dir, "csi.sock")
	opts.NodeID = "node-1"
	opts.IAMEndpoint = env.IAMURL
	opts.AllowInsecureHTTP = true // the emulator speaks plain http on loopback
	opts.AllowedCOSEndpoints = []string{env.COSURL}
	mt := mountertest.Start(t, dir, binary)
	opts.MounterEndpoint = mt.Endpoint
	logs := mt.Logs
	stateDir := filepath.Join(dir, "state")
	plugin := startRealPlugin(t, opts)

	target := filepath.Join(dir, "pods", "writer", "volumes", "data")
	t.Cleanup(func() { cleanupTarget(target) })
	req := &csi.NodePublishVolumeRequest{
		VolumeId:         "static-hello",
		TargetPath:       target,
		VolumeCapability: mountCapability(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER),
		VolumeContext: map[string]string{
			attrBucket: env.Bucket, attrEndpoint: env.COSURL, attrProfileID: emulatortest.WriterProfileID,
			keyPodNamespace: "default", keyPodName: "writer", keySAName: "default",
			keyTokens: tokensJSON("iam", env.MintPodToken(t, "default", "default", "writer", time.Hour)),
		},
	}
	if _, err := plugin.node.NodePublishVolume(ctx, req); err != nil {
		t.Fatalf("publish: %v", err)
	}
	pid := serverPID(t, stateDir)

	write := func(name, text string) {
		t.Helper()
		start := env.AuditLen()
		cmd := exec.Command("/bin/sh", "-c", `echo "$1" > "$2"`, "sh", text, filepath.Join(target, name))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("shell write of %s: %v: %s", name, err, out)
		}
		if got := readObject(t, env, name); got != text+"\n" {
			t.Errorf("object %s = %q, want %q", name, got, text+"\n")
		}
		bearerPut := false
		for _, e := range env.AuditSince(start) {
			if e.Operation == "PutObject" && e.Key == name && e.Status == 200 && e.AuthScheme == "bearer" && e.PrincipalID == emulatortest.WriterProfileID {
				bearerPut = true
			}
		}
		if !bearerPut {
			t.Errorf("no bearer PutObject of %s by %s in the audit", name, emulatortest.WriterProfileID)
		}
	}
	write("hello.txt", "hello world")

	// Access tokens now live 2 s; the pod's token rotates; the server keeps
	// writing with tokens exchanged from the new file, without a remount.
	env.SetAccessTokenLifetime(2 * time.Second)
	req.VolumeContext[keyTokens] = tokensJSON("iam", env.MintPodToken(t, "default", "default", "writer", time.Hour))
	if _, err := plugin.node.NodePublishVolume(ctx, req); err != nil {
		t.Fatalf("republish: %v", err)
	}
	time.Sleep(3 * time.Second)
	write("after-rotation.txt", "still writing")
	if got := serverPID(t, stateDir); got != pid {
		t.Errorf("server pid changed from %d to %d", pid, got)
	}

	// The server's log (the mounter's output) names the volume and holds no token.
	if out := logs.String(); strings.Contains(out, "eyJ") || !strings.Contains(out, `volumeID="static-hello"`) {
		t.Errorf("server log contains a token or does not name the volume:\n%s", out)
	}

	if _, err := plugin.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "static-hello", TargetPath: target}); err != nil {
		t.Fatalf("unpublish: %v", err)
	}
	assertNothingLeft(t, target, stateDir, pid)
	// Everything written was flushed before the server exited.
	if got := readObject(t, env, "hello.txt"); got != "hello world\n" {
		t.Errorf("after unpublish hello.txt = %q", got)
	}
}

// serverPID reads the PID of the only volume record in stateDir.
func serverPID(t *testing.T, stateDir string) int {
	t.Helper()
	entries, err := os.ReadDir(stateDir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("state dir holds %d entries: %v", len(entries), err)
	}
	data, err := os.ReadFile(filepath.Join(stateDir, entries[0].Name(), "volume.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec mounter.Record
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	return rec.PID
}

// readObject reads an object of the emulator's bucket with the API key.
func readObject(t *testing.T, env *emulatortest.Env, key string) string {
	t.Helper()
	exchanger, err := iam.NewClient(iam.ClientOptions{BaseURL: env.IAMURL})
	if err != nil {
		t.Fatal(err)
	}
	src, err := iam.NewAPIKeySource(exchanger, env.APIKey())
	if err != nil {
		t.Fatal(err)
	}
	c, err := cos.New(cos.Options{Endpoint: env.COSURL, UsePathStyle: true, Tokens: src})
	if err != nil {
		t.Fatal(err)
	}
	body, _, err := c.GetObject(context.Background(), env.Bucket, key, cos.GetOptions{})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
