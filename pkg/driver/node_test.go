package driver

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cosmount/cosmount/pkg/iam"
	"github.com/cosmount/cosmount/pkg/mounterapi"
	"github.com/cosmount/cosmount/pkg/volume"
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
	wantOpts := volume.DefaultOptions()
	wantOpts.AllowOther = true
	want := volume.Spec{
		VolumeID: "pv-hello", Target: target, Bucket: "hello-bucket", Endpoint: "http://127.0.0.1:8080",
		IAMEndpoint: "http://127.0.0.1:9", Auth: volume.AuthTrustedProfile, Profile: volume.Profile{Name: "Profile-writer"},
		Options: wantOpts,
	}
	if m.spec != want || m.creds != (volume.Credentials{CRToken: podTokenA}) {
		t.Errorf("mounted\n %+v\nwant\n %+v", m.spec, want)
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
	if p.mounter.get(target).creds.CRToken != podTokenB || p.mounter.updateN != 1 {
		t.Error("the renewed token was not installed")
	}
	if p.mounter.mountN != 1 || p.mounter.unmountN != 0 || p.mounter.get(target).pid != m.pid {
		t.Errorf("republish remounted: %d mounts, %d unmounts", p.mounter.mountN, p.mounter.unmountN)
	}

	// A renewed token IAM refuses: error, but the mount and its old token stay.
	p.verifier.err = fmt.Errorf("BXNIM0398E: %w", iam.ErrNotEligible)
	_, err := p.node.NodePublishVolume(ctx, publishReq(target, podTokenA))
	if code(err) != codes.PermissionDenied {
		t.Errorf("refused republish = %v, want PermissionDenied", err)
	}
	if p.mounter.get(target) == nil || p.mounter.get(target).creds.CRToken != podTokenB || p.mounter.unmountN != 0 {
		t.Error("a failed republish touched the mount")
	}
	// IAM cannot be reached when the renewed token arrives: it is installed
	// anyway, since the old one is about to expire and IAM did not refuse it.
	p.verifier.err = fmt.Errorf("dial tcp: %w", iam.ErrTransient)
	if _, err := p.node.NodePublishVolume(ctx, publishReq(target, podTokenA)); err != nil {
		t.Fatalf("republish while IAM is down: %v", err)
	}
	if p.mounter.get(target).creds.CRToken != podTokenA || p.mounter.updateN != 2 {
		t.Error("the renewed token was not installed while IAM was down")
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
}

func TestPublishFailuresLeaveNothing(t *testing.T) {
	tests := []struct {
		name       string
		modify     func(*csi.NodePublishVolumeRequest)
		verifyErr  error
		publishErr error
		want       codes.Code
		wantMsg    string
	}{
		{name: "profile refuses the pod", verifyErr: &testIAMError{"BXNIM0398E", "Selected trusted profile not eligible", "cluster:readers:default:reader", iam.ErrNotEligible},
			want: codes.PermissionDenied, wantMsg: "BXNIM0398E"},
		{name: "invalid token", verifyErr: fmt.Errorf("BXNIM0407E: %w", iam.ErrBadCredentials), want: codes.PermissionDenied, wantMsg: "BXNIM0407E"},
		{name: "IAM down", verifyErr: fmt.Errorf("dial: %w", iam.ErrTransient), want: codes.Unavailable},
		{name: "mount fails", publishErr: status.Error(codes.Internal, "cosmount: boom"), want: codes.Internal, wantMsg: "boom"},
		{name: "mounter down", publishErr: status.Error(codes.Unavailable, "the node's cosmount mounter at /run/x.sock is not reachable"), want: codes.Unavailable, wantMsg: "mounter"},
		{name: "no token", modify: func(r *csi.NodePublishVolumeRequest) { delete(r.VolumeContext, keyTokens) }, want: codes.FailedPrecondition, wantMsg: "tokenRequests"},
		{name: "token for another audience", modify: func(r *csi.NodePublishVolumeRequest) { r.VolumeContext[keyTokens] = tokensJSON("vault", podTokenA) },
			want: codes.FailedPrecondition, wantMsg: `"vault"`},
		{name: "unknown attribute", modify: func(r *csi.NodePublishVolumeRequest) { r.VolumeContext["bucket"] = "x" }, want: codes.InvalidArgument, wantMsg: `"bucket"`},
		{name: "no bucket", modify: func(r *csi.NodePublishVolumeRequest) { delete(r.VolumeContext, attrBucket) }, want: codes.InvalidArgument, wantMsg: attrBucket},
		{name: "bad mount flag", modify: func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability = mountCapability(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "uid=root")
		}, want: codes.InvalidArgument, wantMsg: "uid"},
		{name: "size the server would refuse", modify: func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability = mountCapability(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "part_size=1TB")
		}, want: codes.InvalidArgument, wantMsg: "part_size"},
		{name: "node option", modify: func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability = mountCapability(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "temp_dir=/etc")
		}, want: codes.InvalidArgument, wantMsg: "temp_dir"},
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
			p.verifier.err, p.mounter.publishErr = tc.verifyErr, tc.publishErr
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
		want   string
	}{
		{"defaults", func(r *csi.NodePublishVolumeRequest) {}, "allow_other"},
		{"readonly flag", func(r *csi.NodePublishVolumeRequest) { r.Readonly = true }, "allow_other,ro"},
		{"reader-only access mode", func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability = mountCapability(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY)
		}, "allow_other,ro"},
		{"mount flags", func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability = mountCapability(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "uid=1000,gid=2000", "file-mode=0640", "attr_ttl=6s", "ro", "part_size=16Mi")
		}, "uid=1000,gid=2000,file_mode=0640,allow_other,ro,attr_ttl=6s,part_size=16MiB"},
		{"fsGroup", func(r *csi.NodePublishVolumeRequest) {
			c := mountCapability(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "file_mode=0600")
			c.GetMount().VolumeMountGroup = "3000"
			r.VolumeCapability = c
		}, "gid=3000,file_mode=0660,dir_mode=0775,allow_other"},
		{"prefix, region and IAM override", func(r *csi.NodePublishVolumeRequest) {
			r.VolumeContext[attrPrefix] = "/team/a/"
			r.VolumeContext[attrRegion] = "us-south"
			r.VolumeContext[attrIAMEndpoint] = "http://127.0.0.1:7"
		}, "allow_other"},
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
			got := p.mounter.get(target).spec
			if enc := got.Options.Encode(); enc != tc.want {
				t.Errorf("options %q, want %q", enc, tc.want)
			}
			if r := req.VolumeContext[attrRegion]; r != "" && (got.Region != r || got.Prefix != "team/a" || got.IAMEndpoint != "http://127.0.0.1:7") {
				t.Errorf("volume %+v", got)
			}
		})
	}
}

func TestPublishEphemeralAndFallbackAuth(t *testing.T) {
	p := startPluginWith(t, func(o *Options) {
		o.Inline.Enabled = true
		o.COSEndpoint = "http://127.0.0.1:8080"
	})
	ctx := context.Background()

	// An inline volume: attributes from the pod spec, the pod's own token in
	// secrets, the endpoints the admin's.
	inline := publishReq(filepath.Join(p.dir, "inline"), "")
	inline.VolumeId = "csi-0123456789abcdef"
	inline.VolumeContext[keyEphemeral] = "true"
	delete(inline.VolumeContext, attrEndpoint)
	delete(inline.VolumeContext, keyTokens)
	inline.Secrets = map[string]string{keyTokens: tokensJSON("iam", podTokenB)}
	if _, err := p.node.NodePublishVolume(ctx, inline); err != nil {
		t.Fatalf("inline publish: %v", err)
	}
	if got := p.mounter.get(inline.TargetPath); got.creds.CRToken != podTokenB || got.spec.Endpoint != "http://127.0.0.1:8080" || got.spec.IAMEndpoint != "http://127.0.0.1:9" {
		t.Errorf("inline volume %+v: want the token from secrets and the default endpoints", got.spec)
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
	if got := p.mounter.get(hmac.TargetPath); got.spec.Auth != volume.AuthHMAC || got.creds.SecretAccessKey != "s3cr3t" || got.spec.IAMEndpoint != "" {
		t.Errorf("hmac volume %+v", got.spec)
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
	if got := p.mounter.get(apiKey.TargetPath); got.spec.Auth != volume.AuthAPIKey || got.creds.APIKey != "key-123" {
		t.Errorf("api key volume %+v", got.spec)
	}
}

// A dead server is reported with the mounter's reason until the volume is
// unpublished, and a republish does not paper over it.
func TestDeadServerIsReported(t *testing.T) {
	p := startPlugin(t)
	ctx := context.Background()
	target := filepath.Join(p.dir, "target")
	if _, err := p.node.NodePublishVolume(ctx, publishReq(target, podTokenA)); err != nil {
		t.Fatal(err)
	}
	p.mounter.set(target, func(m *fakeMount) { m.state, m.reason = mounterapi.StateDead, "ServerOOMKilled" })

	for _, req := range []*csi.NodeGetVolumeHealthRequest{{VolumeId: "pv-hello"}, {VolumeId: "pv-hello", VolumePublishPath: target}} {
		h, err := p.node.NodeGetVolumeHealth(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		st := h.GetVolumeHealth().GetHealthStatuses()
		if len(st) != 1 || st[0].GetStatus() != csi.VolumeHealthErrorType_INACCESSIBLE || st[0].GetReason() != "ServerOOMKilled" || !strings.Contains(st[0].GetMessage(), target) {
			t.Errorf("health of a dead server = %v", h)
		}
	}
	if _, err := p.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "pv-hello", VolumePath: target}); code(err) != codes.FailedPrecondition {
		t.Errorf("stats of a dead server = %v", err)
	}
	if _, err := p.node.NodePublishVolume(ctx, publishReq(target, podTokenB)); code(err) != codes.FailedPrecondition {
		t.Errorf("republish of a dead server = %v, want FailedPrecondition", err)
	}
	if p.mounter.mountN != 1 {
		t.Error("the dead volume was remounted")
	}
	if _, err := p.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "pv-hello", TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: "pv-hello"}); code(err) != codes.NotFound {
		t.Errorf("health after unpublish = %v", err)
	}
}

func TestHealthyVolumeStatsAndHealth(t *testing.T) {
	p := startPlugin(t)
	ctx := context.Background()
	target := filepath.Join(p.dir, "target")
	if _, err := p.node.NodePublishVolume(ctx, publishReq(target, podTokenA)); err != nil {
		t.Fatal(err)
	}
	h, err := p.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: "pv-hello", VolumePublishPath: target})
	if err != nil || len(h.GetVolumeHealth().GetHealthStatuses()) != 0 || h.GetVolumeHealth().GetVolumeId() != "pv-hello" {
		t.Errorf("health of a healthy mount = %v, %v", h, err)
	}
	st, err := p.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "pv-hello", VolumePath: target})
	if err != nil || len(st.GetUsage()) != 2 || st.GetUsage()[0].GetTotal() != 1<<50 {
		t.Errorf("stats = %v, %v", st, err)
	}
	if _, err := p.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: "other"}); code(err) != codes.NotFound {
		t.Errorf("health of an unknown volume = %v", err)
	}
	if _, err := p.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "other", VolumePath: target}); code(err) != codes.NotFound {
		t.Errorf("stats of another volume = %v", err)
	}
}

// Unpublish passes the mounter's "still uploading" on to kubelet, which
// retries; the volume stays until the uploads are done.
func TestUnpublishWaitsForUploads(t *testing.T) {
	p := startPlugin(t)
	ctx := context.Background()
	target := filepath.Join(p.dir, "target")
	if _, err := p.node.NodePublishVolume(ctx, publishReq(target, podTokenA)); err != nil {
		t.Fatal(err)
	}
	p.mounter.set(target, func(m *fakeMount) { m.pending = 3 })
	_, err := p.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "pv-hello", TargetPath: target})
	if code(err) != codes.Unavailable || !strings.Contains(err.Error(), "3 file(s)") {
		t.Fatalf("unpublish while uploading = %v", err)
	}
	if p.mounter.get(target) == nil {
		t.Fatal("the volume is gone while uploading")
	}
	p.mounter.set(target, func(m *fakeMount) { m.pending = 0 })
	if _, err := p.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "pv-hello", TargetPath: target}); err != nil {
		t.Fatal(err)
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
