package driver

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/iam"
	"github.com/cosmount/cosmount/pkg/mounter/mountertest"
)

// syncBuffer collects log output written from several goroutines.
type syncBuffer = mountertest.Buffer

// captureLogs sends klog output at verbosity 5 into a buffer for the test.
func captureLogs(t *testing.T) *syncBuffer {
	t.Helper()
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	for k, v := range map[string]string{"v": "5", "logtostderr": "false", "alsologtostderr": "false", "stderrthreshold": "FATAL"} {
		if err := fs.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	buf := &syncBuffer{}
	klog.SetOutput(buf)
	t.Cleanup(func() {
		klog.Flush()
		fs.Set("v", "0")
		fs.Set("logtostderr", "true")
		klog.SetOutput(os.Stderr)
	})
	return buf
}

func TestLogsCarryNoSecrets(t *testing.T) {
	logs := captureLogs(t)
	p := startPlugin(t)
	ctx := context.Background()
	const apiKey = "api-key-that-must-not-leak"
	const hmacSecret = "hmac-secret-that-must-not-leak"

	// A successful publish logs its request at V(3), a refused one at level 0.
	target := filepath.Join(p.dir, "target")
	if _, err := p.node.NodePublishVolume(ctx, publishReq(target, podTokenA)); err != nil {
		t.Fatal(err)
	}
	p.verifier.err = fmt.Errorf("refused: %w", iam.ErrNotEligible)
	inSecrets := publishReq(filepath.Join(p.dir, "other"), "")
	delete(inSecrets.VolumeContext, keyTokens)
	inSecrets.Secrets = map[string]string{keyTokens: tokensJSON("iam", podTokenB)}
	if _, err := p.node.NodePublishVolume(ctx, inSecrets); err == nil {
		t.Fatal("refused publish succeeded")
	}
	hmac := publishReq(filepath.Join(p.dir, "hmac"), podTokenA)
	delete(hmac.VolumeContext, attrProfileName)
	hmac.VolumeContext[attrAuthType] = "hmac"
	hmac.Secrets = map[string]string{secretAccessKeyID: "AKID", secretSecretAccessKey: hmacSecret}
	if _, err := p.node.NodePublishVolume(ctx, hmac); err != nil {
		t.Fatal(err)
	}
	req := createReq("pvc-log", bucketParams(), 0)
	req.Secrets = map[string]string{secretAPIKey: apiKey}
	if _, err := p.controller.CreateVolume(ctx, req); err != nil {
		t.Fatal(err)
	}
	klog.Flush()
	out := logs.String()
	for _, secret := range []string{podTokenA, podTokenB, apiKey, hmacSecret, "eyJ"} {
		if strings.Contains(out, secret) {
			t.Errorf("logs contain %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{"NodePublishVolume", "CreateVolume", strippedValue, "CSI call failed", "hello-bucket"} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
}

func TestSanitizeLeavesRequestIntact(t *testing.T) {
	req := publishReq("/t", podTokenA)
	req.Secrets = map[string]string{"apiKey": "k"}
	s := sanitize(req).String()
	if strings.Contains(s, podTokenA) || !strings.Contains(s, strippedValue) || !strings.Contains(s, "hello-bucket") {
		t.Errorf("sanitized: %s", s)
	}
	if req.VolumeContext[keyTokens] != tokensJSON("iam", podTokenA) || req.Secrets["apiKey"] != "k" {
		t.Error("sanitize modified the request itself")
	}
	// Responses with volume contexts are covered too.
	resp := &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeContext: map[string]string{keyTokens: podTokenA}}}
	if strings.Contains(sanitize(resp).String(), podTokenA) {
		t.Error("token in a nested message survived")
	}
}

func TestRPCMetrics(t *testing.T) {
	p := startPlugin(t)
	ctx := context.Background()
	p.node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	p.node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	p.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{})
	families, err := p.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{}
	histos := map[string]uint64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch f.GetName() {
			case "cosmount_csi_rpc_total":
				counts[labels["method"]+"/"+labels["code"]] = m.GetCounter().GetValue()
			case "cosmount_csi_rpc_duration_seconds":
				histos[labels["method"]] = m.GetHistogram().GetSampleCount()
			}
		}
	}
	if counts["NodeGetInfo/OK"] != 2 || counts["NodeUnpublishVolume/InvalidArgument"] != 1 {
		t.Errorf("RPC counts %v", counts)
	}
	if histos["NodeGetInfo"] != 2 {
		t.Errorf("latency samples %v", histos)
	}
}
