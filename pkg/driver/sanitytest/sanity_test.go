// Package sanitytest runs the CSI conformance suite (csi-test v5
// pkg/sanity) against the real driver: controller and node services over
// their socket, real FUSE mounts, the emulator's IAM and COS behind them,
// in bucket mode and in prefix mode, with every RPC repeated for idempotency.
package sanitytest

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cosmount/cosmount/pkg/driver"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
	"github.com/cosmount/cosmount/pkg/mounter/mountertest"
	"github.com/cosmount/cosmount/pkg/mounterapi"
)

// serverPackage is the per-volume FUSE server the node's mounter starts: the
// real one, so every publish in the suite is a live mount of the emulator's
// bucket or prefix.
const serverPackage = "../../../cmd/cosmount"

func TestSanity(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("no fusermount3 (apt-get install fuse3)")
	}
	dir, err := os.MkdirTemp("", "csi-sanity-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	binary := filepath.Join(dir, "cosmount")
	if out, err := exec.Command("go", "build", "-o", binary, serverPackage).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", serverPackage, err, out)
	}
	env := emulatortest.Start(t)

	sock := filepath.Join(dir, "csi.sock")
	opts := driver.DefaultOptions()
	opts.Endpoint = "unix://" + sock
	opts.NodeID = "sanity-node"
	opts.IAMEndpoint = env.IAMURL
	opts.AllowInsecureHTTP = true // the emulator speaks plain http on loopback
	opts.AllowedCOSEndpoints = []string{env.COSURL}
	opts.MounterEndpoint = mountertest.Start(t, dir, binary).Endpoint
	opts.ControllerProfile = emulatortest.WriterProfileID
	opts.ControllerTokenFile = env.WritePodToken(t, dir, "default", "default", "controller", time.Hour)
	client, err := mounterapi.Dial(opts.MounterEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	d, err := driver.New(opts, driver.Deps{Mounter: client, Verifier: driver.NewIAMVerifier(), Stores: driver.NewCOSStores(opts)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	waitForSocket(t, sock)

	// sanity has no pod: the pod's token reaches NodePublishVolume through
	// secrets, as with serviceAccountTokenInSecrets (Kubernetes 1.35+).
	tokens, _ := json.Marshal(map[string]any{"iam": map[string]string{
		"token": env.MintPodToken(t, "default", "default", "sanity-pod", time.Hour), "expirationTimestamp": time.Now().Add(time.Hour).Format(time.RFC3339),
	}})
	secrets, _ := json.Marshal(map[string]any{"NodePublishVolumeSecret": map[string]string{"csi.storage.k8s.io/serviceAccount.tokens": string(tokens)}})
	secretsFile := filepath.Join(dir, "secrets.yaml")
	if err := os.WriteFile(secretsFile, secrets, 0o600); err != nil {
		t.Fatal(err)
	}

	modes := map[string]map[string]string{
		"bucket mode": {
			"cosEndpoint": env.COSURL, "trustedProfileID": emulatortest.WriterProfileID,
			"serviceInstanceID": env.ServiceInstanceID, "provisioning": "bucket",
		},
		"prefix mode": {
			"cosEndpoint": env.COSURL, "trustedProfileID": emulatortest.WriterProfileID,
			"bucketName": env.Bucket, "prefix": "sanity", "provisioning": "prefix",
		},
	}
	var contexts []*sanity.TestContext
	for name, params := range modes {
		cfg := sanity.NewTestConfig()
		cfg.Address = "unix://" + sock
		base := filepath.Join(dir, strings.Fields(name)[0])
		if err := os.Mkdir(base, 0o750); err != nil {
			t.Fatal(err)
		}
		cfg.TargetPath = filepath.Join(base, "target")
		cfg.StagingPath = filepath.Join(base, "staging")
		cfg.SecretsFile = secretsFile
		cfg.TestVolumeParameters = params
		cfg.TestVolumeSize = 1 << 30
		cfg.IdempotentCount = 2
		// The suite skips what the plugin does not advertise: snapshots,
		// cloning, group snapshots, ListVolumes, GetCapacity,
		// ControllerPublish (nothing to attach), expansion and modification
		// (COS has no size or volume attributes to change), NodeStage (a
		// FUSE mount needs no staging), controller-side and storage health
		// (node-side volume health is advertised and tested), and
		// SINGLE_NODE_MULTI_WRITER (every access mode is served alike).
		Describe(name, func() {
			contexts = append(contexts, sanity.GinkgoTest(&cfg))
		})
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "cosmount CSI sanity")
	for _, sc := range contexts {
		sc.Finalize()
	}
}

func waitForSocket(t *testing.T, sock string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("plugin socket did not appear")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
