package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cosmount/cosmount/pkg/iam"
	"github.com/cosmount/cosmount/pkg/mounter"
)

// Token-shaped strings that must never show up in logs or errors.
const (
	podTokenA = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwb2QtYSJ9.c2lnLWE"
	podTokenB = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwb2QtYiJ9.c2lnLWI"
)

func tokensJSON(audience, token string) string {
	b, _ := json.Marshal(map[string]any{audience: map[string]string{"token": token, "expirationTimestamp": "2030-01-01T00:00:00Z"}})
	return string(b)
}

func mountCapability(mode csi.VolumeCapability_AccessMode_Mode, flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: flags}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

// publishReq is a kubelet-like publish of a static PV with the pod's token.
func publishReq(target, token string) *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{
		VolumeId:         "pv-hello",
		TargetPath:       target,
		VolumeCapability: mountCapability(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER),
		VolumeContext: map[string]string{
			attrBucket:      "hello-bucket",
			attrEndpoint:    "http://127.0.0.1:8080",
			attrProfileName: "Profile-writer",
			keyPodName:      "writer",
			keyPodNamespace: "default",
			keySAName:       "default",
			keyPodUID:       "uid-1",
			keyTokens:       tokensJSON("iam", token),
		},
	}
}

func code(err error) codes.Code { return status.Code(err) }

func TestPublishRepublishUnpublish(t *testing.T) {
	p := startPlugin(t)
	ctx := context.Background()
	target := filepath.Join(p.dir, "pods", "uid-1", "volumes", "hello")

	if _, err := p.node.NodePublishVolume(ctx, publishReq(target, podTokenA)); err != nil {
		t.Fatalf("publish: %v", err)
	}
	m := p.mounter.get(target)
	if m == nil {
		t.Fatal("nothing mounted")
	}
	want := mounter.Volume{
		VolumeID: "pv-hello", Target: target, Bucket: "hello-bucket", Endpoint: "http://127.0.0.1:8080",
		IAMEndpoint: "http://127.0.0.1:9", Auth: mounter.AuthTrustedProfile, ProfileName: "Profile-writer",
		Options: []string{"allow_other"}, Credentials: mounter.Credentials{CRToken: podTokenA},
	}
	if fmt.Sprintf("%#v", m.vol) != fmt.Sprintf("%#v", want) || m.vol.Credentials != want.Credentials {
		t.Errorf("mounted\n %#v\nwant\n %#v", m.vol, want)
	}
	if fi, err := os.Stat(target); err != nil || !fi.IsDir() {
		t.Errorf("target directory not created: %v", err)
	}
	if p.verifier.count() != 1 || p.verifier.tokens[0] != podTokenA || p.verifier.profiles[0] != (iam.Profile{Name: "Profile-writer"}) {
		t.Errorf("verifier saw %d calls, profiles %v", p.verifier.count(), p.verifier.profiles)
	}

	// kubelet republishes with the same token: nothing happens at all.
	if _, err := p.node.NodePublishVolume(ctx, publishReq(target, podTokenA)); err != nil {
		t.Fatalf("republish: %v", err)
	}
	if p.verifier.count() != 1 || p.mounter.updateN != 0 || p.mounter.mountN != 1 {
		t.Errorf("same-token republish: %d exchanges, %d updates, %d mounts", p.verifier.count(), p.mounter.updateN, p.mounter.mountN)
	}

	// A renewed token: exchanged once and swapped in, never remounted.
	if _, err := p.node.NodePublishVolume(ctx, publishReq(target, podTokenB)); err != nil {
		t.Fatalf("republish with a new token: %v", err)
	}
	if p.mounter.get(target).vol.Credentials.CRToken != podTokenB || p.mounter.updateN != 1 {
		t.Error("the renewed token was not installed")
	}
	if p.mounter.mountN != 1 || p.mounter.unmountN != 0 || p.mounter.get(target).rec.PID != m.rec.PID {
		t.Errorf("republish remounted: %d mounts, %d unmounts", p.mounter.mountN, p.mounter.unmountN)
	}

	// A renewed token IAM refuses: error, but the mount and its old token stay.
	p.verifier.err = fmt.Errorf("BXNIM0398E: %w", iam.ErrNotEligible)
	_, err := p.node.NodePublishVolume(ctx, publishReq(target, podTokenA))
	if code(err) != codes.PermissionDenied {
		t.Errorf("refused republish = %v, want PermissionDenied", err)
	}
	if p.mounter.get(target) == nil || p.mounter.get(target).vol.Credentials.CRToken != podTokenB || p.mounter.unmountN != 0 {
		t.Error("a failed republish touched the mount")
	}
	p.verifier.err = nil

	// Publishing the same target read-only is a different publish.
	ro := publishReq(target, podTokenB)
	ro.Readonly = true
	if _, err := p.node.NodePublishVolume(ctx, ro); code(err) != codes.AlreadyExists {
		t.Errorf("incompatible republish = %v, want AlreadyExists", err)
	}

	for i := 0; i < 2; i++ {
		if _, err := p.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "pv-hello", TargetPath: target}); err != nil {
			t.Fatalf("unpublish #%d: %v", i+1, err)
		}
	}
	if p.mounter.get(target) != nil || p.mounter.unmountN != 1 {
		t.Error("unpublish left the mount")
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("target still exists: %v", err)
	}
}

func TestPublishFailuresLeaveNothing(t *testing.T) {
	tests := []struct {
		name      string
		modify    func(*csi.NodePublishVolumeRequest)
		verifyErr error
		mountErr  error
		want      codes.Code
		wantMsg   string
	}{
		{name: "profile refuses the pod", verifyErr: &testIAMError{"BXNIM0398E", "Selected trusted profile not eligible", "cluster:readers:default:reader", iam.ErrNotEligible},
			want: codes.PermissionDenied, wantMsg: "BXNIM0398E"},
		{name: "invalid token", verifyErr: fmt.Errorf("BXNIM0407E: %w", iam.ErrBadCredentials), want: codes.PermissionDenied, wantMsg: "BXNIM0407E"},
		{name: "IAM down", verifyErr: fmt.Errorf("dial: %w", iam.ErrTransient), want: codes.Unavailable},
		{name: "mount fails", mountErr: errBoom, want: codes.Internal, wantMsg: "boom"},
		{name: "no token", modify: func(r *csi.NodePublishVolumeRequest) { delete(r.VolumeContext, keyTokens) }, want: codes.FailedPrecondition, wantMsg: "tokenRequests"},
		{name: "token for another audience", modify: func(r *csi.NodePublishVolumeRequest) { r.VolumeContext[keyTokens] = tokensJSON("vault", podTokenA) },
			want: codes.FailedPrecondition, wantMsg: `"vault"`},
		{name: "unknown attribute", modify: func(r *csi.NodePublishVolumeRequest) { r.VolumeContext["bucket"] = "x" }, want: codes.InvalidArgument, wantMsg: `"bucket"`},
		{name: "no bucket", modify: func(r *csi.NodePublishVolumeRequest) { delete(r.VolumeContext, attrBucket) }, want: codes.InvalidArgument, wantMsg: attrBucket},
		{name: "bad mount flag", modify: func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability = mountCapability(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "uid=root")
		}, want: codes.InvalidArgument, wantMsg: "uid"},
		{name: "block volume", modify: func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
		}, want: codes.InvalidArgument, wantMsg: "block"},
		{name: "api key without secret", modify: func(r *csi.NodePublishVolumeRequest) {
			delete(r.VolumeContext, attrProfileName)
			r.VolumeContext[attrAuthType] = "apiKey"
		}, want: codes.InvalidArgument, wantMsg: secretAPIKey},
		{name: "relative target", modify: func(r *csi.NodePublishVolumeRequest) { r.TargetPath = "rel/target" }, want: codes.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startPlugin(t)
			p.verifier.err, p.mounter.mountErr = tc.verifyErr, tc.mountErr
			target := filepath.Join(p.dir, "target")
			req := publishReq(target, podTokenA)
			if tc.modify != nil {
				tc.modify(req)
			}
			_, err := p.node.NodePublishVolume(context.Background(), req)
			if code(err) != tc.want || !strings.Contains(status.Convert(err).Message(), tc.wantMsg) {
				t.Fatalf("publish = %v, want %v containing %q", err, tc.want, tc.wantMsg)
			}
			if strings.Contains(err.Error(), podTokenA) {
				t.Error("the error contains the pod token")
			}
			if len(p.mounter.mounts) != 0 {
				t.Error("something is mounted after a failed publish")
			}
			if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("target left behind: %v", err)
			}
		})
	}
}

// testIAMError looks like *iam.Error to the driver: same message shape, same kind.
type testIAMError struct {
	code, msg, details string
	kind               error
}

func (e *testIAMError) Error() string {
	return fmt.Sprintf("iam: token exchange failed (%v): HTTP 400: %s: %s (details: %s)", e.kind, e.code, e.msg, e.details)
}
func (e *testIAMError) Unwrap() error { return e.kind }

func TestPublishMountOptions(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*csi.NodePublishVolumeRequest)
		want   []string
	}{
		{"defaults", func(r *csi.NodePublishVolumeRequest) {}, []string{"allow_other"}},
		{"readonly flag", func(r *csi.NodePublishVolumeRequest) { r.Readonly = true }, []string{"allow_other", "ro"}},
		{"reader-only access mode", func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability = mountCapability(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY)
		}, []string{"allow_other", "ro"}},
		{"mount flags", func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability = mountCapability(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "uid=1000,gid=2000", "file-mode=0640", "attr_ttl=5s", "ro")
		}, []string{"attr_ttl=5s", "file_mode=0640", "gid=2000", "uid=1000", "allow_other", "ro"}},
		{"fsGroup", func(r *csi.NodePublishVolumeRequest) {
			c := mountCapability(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "file_mode=0600")
			c.GetMount().VolumeMountGroup = "3000"
			r.VolumeCapability = c
		}, []string{"dir_mode=0775", "file_mode=0660", "gid=3000", "allow_other"}},
		{"prefix, region and IAM override", func(r *csi.NodePublishVolumeRequest) {
			r.VolumeContext[attrPrefix] = "/team/a/"
			r.VolumeContext[attrRegion] = "us-south"
			r.VolumeContext[attrIAMEndpoint] = "http://127.0.0.1:7"
		}, []string{"allow_other"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startPlugin(t)
			target := filepath.Join(p.dir, "target")
			req := publishReq(target, podTokenA)
			tc.modify(req)
			if _, err := p.node.NodePublishVolume(context.Background(), req); err != nil {
				t.Fatal(err)
			}
			got := p.mounter.get(target).vol
			if !slices.Equal(got.Options, tc.want) {
				t.Errorf("options %q, want %q", got.Options, tc.want)
			}
			if r := req.VolumeContext[attrRegion]; r != "" && (got.Region != r || got.Prefix != "team/a" || got.IAMEndpoint != "http://127.0.0.1:7") {
				t.Errorf("volume %+v", got)
			}
		})
	}
}

func TestPublishEphemeralAndFallbackAuth(t *testing.T) {
	p := startPlugin(t)
	ctx := context.Background()

	// An inline volume: attributes from the pod spec, the pod's own token in secrets.
	inline := publishReq(filepath.Join(p.dir, "inline"), "")
	inline.VolumeId = "csi-0123456789abcdef"
	inline.VolumeContext[keyEphemeral] = "true"
	delete(inline.VolumeContext, keyTokens)
	inline.Secrets = map[string]string{keyTokens: tokensJSON("iam", podTokenB)}
	if _, err := p.node.NodePublishVolume(ctx, inline); err != nil {
		t.Fatalf("inline publish: %v", err)
	}
	if got := p.mounter.get(inline.TargetPath).vol.Credentials.CRToken; got != podTokenB {
		t.Error("the token from secrets was not used")
	}

	hmac := publishReq(filepath.Join(p.dir, "hmac"), "")
	delete(hmac.VolumeContext, attrProfileName)
	delete(hmac.VolumeContext, keyTokens)
	hmac.VolumeContext[attrAuthType] = "hmac"
	hmac.Secrets = map[string]string{secretAccessKeyID: "AKID", secretSecretAccessKey: "s3cr3t"}
	before := p.verifier.count()
	if _, err := p.node.NodePublishVolume(ctx, hmac); err != nil {
		t.Fatalf("hmac publish: %v", err)
	}
	if got := p.mounter.get(hmac.TargetPath).vol; got.Auth != mounter.AuthHMAC || got.Credentials.SecretAccessKey != "s3cr3t" {
		t.Errorf("hmac volume %+v", got)
	}
	if p.verifier.count() != before {
		t.Error("HMAC keys were sent to IAM")
	}

	apiKey := publishReq(filepath.Join(p.dir, "apikey"), "")
	delete(apiKey.VolumeContext, attrProfileName)
	apiKey.VolumeContext[attrAuthType] = "apiKey"
	apiKey.Secrets = map[string]string{secretAPIKey: "key-123"}
	if _, err := p.node.NodePublishVolume(ctx, apiKey); err != nil {
		t.Fatalf("api key publish: %v", err)
	}
	if got := p.mounter.get(apiKey.TargetPath).vol; got.Auth != mounter.AuthAPIKey || got.Credentials.APIKey != "key-123" {
		t.Errorf("api key volume %+v", got)
	}
}

func TestPublishReplacesDeadMount(t *testing.T) {
	p := startPlugin(t)
	ctx := context.Background()
	target := filepath.Join(p.dir, "target")
	if _, err := p.node.NodePublishVolume(ctx, publishReq(target, podTokenA)); err != nil {
		t.Fatal(err)
	}
	p.mounter.get(target).state = mounter.Dead

	h, err := p.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: "pv-hello"})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.GetVolumeHealth().GetHealthStatuses()) != 1 || h.GetVolumeHealth().GetHealthStatuses()[0].GetStatus() != csi.VolumeHealthErrorType_INACCESSIBLE {
		t.Errorf("health of a dead mount = %v", h)
	}
	if _, err := p.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "pv-hello", VolumePath: target}); code(err) != codes.FailedPrecondition {
		t.Errorf("stats of a dead mount = %v", err)
	}

	if _, err := p.node.NodePublishVolume(ctx, publishReq(target, podTokenA)); err != nil {
		t.Fatal(err)
	}
	if p.mounter.mountN != 2 || p.mounter.unmountN != 1 || p.mounter.get(target).state != mounter.Healthy {
		t.Errorf("dead mount not replaced: %d mounts, %d unmounts", p.mounter.mountN, p.mounter.unmountN)
	}
	h, err = p.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: "pv-hello", VolumePublishPath: target})
	if err != nil || len(h.GetVolumeHealth().GetHealthStatuses()) != 0 || h.GetVolumeHealth().GetVolumeId() != "pv-hello" {
		t.Errorf("health of a healthy mount = %v, %v", h, err)
	}
	if _, err := p.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: "other"}); code(err) != codes.NotFound {
		t.Errorf("health of an unknown volume = %v", err)
	}
	if _, err := p.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "other", VolumePath: target}); code(err) != codes.NotFound {
		t.Errorf("stats of another volume = %v", err)
	}
}

func TestConcurrentPublishIsAborted(t *testing.T) {
	p := startPlugin(t)
	p.mounter.block = make(chan struct{})
	p.mounter.entered = make(chan struct{})
	target := filepath.Join(p.dir, "target")
	first := make(chan error, 1)
	go func() {
		_, err := p.node.NodePublishVolume(context.Background(), publishReq(target, podTokenA))
		first <- err
	}()
	select {
	case <-p.mounter.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("first publish never reached the mounter")
	}
	_, err := p.node.NodePublishVolume(context.Background(), publishReq(target, podTokenA))
	if code(err) != codes.Aborted {
		t.Errorf("duplicate publish = %v, want Aborted", err)
	}
	_, err = p.node.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: "pv-hello", TargetPath: target})
	if code(err) != codes.Aborted {
		t.Errorf("unpublish during publish = %v, want Aborted", err)
	}
	close(p.mounter.block)
	if err := <-first; err != nil {
		t.Fatalf("first publish: %v", err)
	}
}

func TestNodeInfoAndCapabilities(t *testing.T) {
	p := startPlugin(t)
	ctx := context.Background()
	info, err := p.node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil || info.GetNodeId() != "node-1" {
		t.Errorf("NodeGetInfo = %v, %v", info, err)
	}
	caps, err := p.node.NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []csi.NodeServiceCapability_RPC_Type
	for _, c := range caps.GetCapabilities() {
		got = append(got, c.GetRpc().GetType())
	}
	if !slices.Equal(got, nodeCapabilities) {
		t.Errorf("capabilities %v", got)
	}
	if _, err := p.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{}); code(err) != codes.Unimplemented {
		t.Errorf("NodeStageVolume = %v, want Unimplemented", err)
	}
	pi, err := p.identity.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	if err != nil || pi.GetName() != Name {
		t.Errorf("GetPluginInfo = %v, %v", pi, err)
	}
	pc, err := p.identity.GetPluginCapabilities(ctx, &csi.GetPluginCapabilitiesRequest{})
	if err != nil || len(pc.GetCapabilities()) != 1 || pc.GetCapabilities()[0].GetService().GetType() != csi.PluginCapability_Service_CONTROLLER_SERVICE {
		t.Errorf("GetPluginCapabilities = %v, %v", pc, err)
	}
	probe, err := p.identity.Probe(ctx, &csi.ProbeRequest{})
	if err != nil || !probe.GetReady().GetValue() {
		t.Errorf("Probe = %v, %v", probe, err)
	}
}
