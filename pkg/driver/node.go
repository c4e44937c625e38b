package driver

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/iam"
	"github.com/cosmount/cosmount/pkg/mounterapi"
	"github.com/cosmount/cosmount/pkg/volume"
)

// NodeService implements the CSI Node service. It holds no mount state of
// its own: the node's mounter (mounterapi.Service) owns every server and
// its record, so a restarted or upgraded plugin loses nothing and learns
// what is mounted by asking.
type NodeService struct {
	csi.UnimplementedNodeServer

	nodeID   string
	audience string
	// iamEndpoints and cosEndpoints are the admin's endpoint rules; inline
	// the policy for ephemeral inline volumes.
	iamEndpoints *EndpointPolicy
	cosEndpoints *EndpointPolicy
	inline       InlinePolicy
	mounter      mounterapi.Service
	verifier     IdentityVerifier
	inFlight     *inFlight

	mu         sync.Mutex
	reportedBy map[string]string // guarded by mu: target -> reason last logged as unhealthy
}

// NewNodeService returns the node service. opts supplies the node ID, token
// audience, the endpoint rules and the inline-volume policy; it must have
// passed Validate.
func NewNodeService(opts Options, m mounterapi.Service, v IdentityVerifier) (*NodeService, error) {
	iamPolicy, cosPolicy, err := opts.endpointPolicies()
	if err != nil {
		return nil, err
	}
	return &NodeService{
		nodeID:       opts.NodeID,
		audience:     opts.TokenAudience,
		iamEndpoints: iamPolicy,
		cosEndpoints: cosPolicy,
		inline:       opts.Inline,
		mounter:      m,
		verifier:     v,
		inFlight:     newInFlight(),
		reportedBy:   map[string]string{},
	}, nil
}

var nodeCapabilities = []csi.NodeServiceCapability_RPC_Type{
	csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
	csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
	csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP,
}

// NodeGetCapabilities lists the node RPCs and features the plugin supports.
func (n *NodeService) NodeGetCapabilities(ctx context.Context, req *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	resp := &csi.NodeGetCapabilitiesResponse{}
	for _, c := range nodeCapabilities {
		resp.Capabilities = append(resp.Capabilities, &csi.NodeServiceCapability{
			Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: c}},
		})
	}
	return resp, nil
}

// NodeGetInfo reports the node ID. Any node can reach COS, so there is no topology.
func (n *NodeService) NodeGetInfo(ctx context.Context, req *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: n.nodeID}, nil
}

// supportedAccessMode reports whether m can be served; object storage
// serves every mode except none.
func supportedAccessMode(m *csi.VolumeCapability_AccessMode) bool {
	return m != nil && m.GetMode() != csi.VolumeCapability_AccessMode_UNKNOWN
}

func readerOnly(m *csi.VolumeCapability_AccessMode) bool {
	switch m.GetMode() {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY, csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY:
		return true
	}
	return false
}

// checkCapability accepts mount access with a known access mode; block
// access cannot be offered by a FUSE filesystem.
func checkCapability(c *csi.VolumeCapability) error {
	if c == nil {
		return status.Error(codes.InvalidArgument, "volume capability is required")
	}
	if c.GetBlock() != nil {
		return status.Error(codes.InvalidArgument, "block access is not supported; use a mount volume")
	}
	if c.GetMount() == nil {
		return status.Error(codes.InvalidArgument, "volume capability must be a mount")
	}
	if !supportedAccessMode(c.GetAccessMode()) {
		return status.Error(codes.InvalidArgument, "volume capability access mode is missing or unknown")
	}
	return nil
}

// buildRequest turns a publish request into the mounter's: the volume's
// spec (validated with pkg/volume's rules, so everything accepted here is
// accepted by the server) and its credentials.
func (n *NodeService) buildRequest(req *csi.NodePublishVolumeRequest) (*mounterapi.PublishRequest, VolumeParams, error) {
	// Whether the volume is inline is kubelet's word: it sets this key
	// itself, over whatever the pod author wrote.
	if req.GetVolumeContext()[keyEphemeral] == "true" {
		if err := n.inline.check(req.GetVolumeContext(), req.GetSecrets()); err != nil {
			return nil, VolumeParams{}, err
		}
	}
	p, err := parseVolumeParams(req.GetVolumeContext())
	if err != nil {
		return nil, p, err
	}
	if p.Bucket == "" {
		return nil, p, invalid(attrBucket, "is required")
	}
	// Endpoints are the admin's: a volume may only pick an allowed one, and
	// nothing is sent anywhere before this check.
	if p.Endpoint, err = n.cosEndpoints.Resolve(p.Endpoint); err != nil {
		return nil, p, err
	}
	iamEndpoint := ""
	if p.AuthType.UsesIAM() {
		if iamEndpoint, err = n.iamEndpoints.Resolve(p.IAMEndpoint); err != nil {
			return nil, p, err
		}
	} else if p.IAMEndpoint != "" {
		if err := n.iamEndpoints.Check(p.IAMEndpoint); err != nil {
			return nil, p, invalid(attrIAMEndpoint, "%v", err)
		}
	}
	// A templated profile becomes the pod's own: its namespace or service
	// account, as kubelet reports them.
	if p.ProfileID, err = expandTemplate(attrProfileID, p.ProfileID, &p); err != nil {
		return nil, p, err
	}
	if p.ProfileName, err = expandTemplate(attrProfileName, p.ProfileName, &p); err != nil {
		return nil, p, err
	}
	capability := req.GetVolumeCapability()
	opts, err := parseMountFlags(capability.GetMount().GetMountFlags())
	if err != nil {
		return nil, p, err
	}
	if group := capability.GetMount().GetVolumeMountGroup(); group != "" {
		gid, err := strconv.ParseUint(group, 10, 32)
		if err != nil {
			return nil, p, status.Errorf(codes.InvalidArgument, "volume mount group %q is not a numeric group ID", group)
		}
		// fsGroup: files belong to the group and the group may write them.
		opts.GID = uint32(gid)
		opts.FileMode |= 0o060
		opts.DirMode |= 0o070
	}
	// Pods run as arbitrary users; without allow_other only root could use the mount.
	opts.AllowOther = true
	if req.GetReadonly() || readerOnly(capability.GetAccessMode()) {
		opts.ReadOnly = true
	}
	spec := volume.Spec{
		VolumeID:    req.GetVolumeId(),
		Target:      filepath.Clean(req.GetTargetPath()),
		Bucket:      p.Bucket,
		Prefix:      p.Prefix,
		Endpoint:    p.Endpoint,
		Region:      p.Region,
		IAMEndpoint: iamEndpoint,
		Auth:        p.AuthType,
		Profile:     volume.Profile{ID: p.ProfileID, Name: p.ProfileName, CRN: p.ProfileCRN},
		Options:     opts,
	}
	if err := spec.Validate(); err != nil {
		return nil, p, status.Errorf(codes.InvalidArgument, "volume attribute %v", err)
	}
	out := &mounterapi.PublishRequest{Spec: spec}
	secrets := req.GetSecrets()
	switch p.AuthType {
	case volume.AuthTrustedProfile:
		out.Credentials.CRToken, err = podToken(secrets, req.GetVolumeContext(), n.audience)
	case volume.AuthAPIKey:
		out.Credentials.APIKey = secrets[secretAPIKey]
		if strings.TrimSpace(out.Credentials.APIKey) == "" {
			err = status.Errorf(codes.InvalidArgument, "authType apiKey needs the secret key %q (nodePublishSecretRef)", secretAPIKey)
		}
	case volume.AuthHMAC:
		out.Credentials.AccessKeyID, out.Credentials.SecretAccessKey = secrets[secretAccessKeyID], secrets[secretSecretAccessKey]
		if out.Credentials.AccessKeyID == "" || out.Credentials.SecretAccessKey == "" {
			err = status.Errorf(codes.InvalidArgument, "authType hmac needs the secret keys %q and %q (nodePublishSecretRef)", secretAccessKeyID, secretSecretAccessKey)
		}
	}
	if err == nil {
		// The form of each credential (line breaks, ':' in a key ID).
		if cerr := out.Credentials.Validate(p.AuthType); cerr != nil {
			err = status.Errorf(codes.InvalidArgument, "%v", cerr)
		}
	}
	return out, p, err
}

// verify exchanges the volume's credentials at IAM once.
func (n *NodeService) verify(ctx context.Context, r *mounterapi.PublishRequest, p VolumeParams) error {
	var err error
	var what string
	spec := &r.Spec
	switch spec.Auth {
	case volume.AuthTrustedProfile:
		profile := iam.Profile{ID: spec.Profile.ID, Name: spec.Profile.Name, CRN: spec.Profile.CRN}
		what = fmt.Sprintf("the token of pod %s/%s (service account %s) for trusted profile %s", p.PodNamespace, p.PodName, p.ServiceAccount, profile)
		err = n.verifier.VerifyTrustedProfile(ctx, spec.IAMEndpoint, profile, r.Credentials.CRToken)
	case volume.AuthAPIKey:
		what = "the API key"
		err = n.verifier.VerifyAPIKey(ctx, spec.IAMEndpoint, r.Credentials.APIKey)
	default:
		return nil // HMAC keys are checked by COS on the first request
	}
	if err != nil {
		return verifyError(what, err)
	}
	return nil
}

// NodePublishVolume asks the mounter to serve the volume at the target. On
// a republish of the same volume (kubelet repeats the call, with a renewed
// token about every 80% of its lifetime) only the credentials are swapped,
// and only when they changed.
func (n *NodeService) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	if req.GetTargetPath() == "" || !filepath.IsAbs(req.GetTargetPath()) {
		return nil, status.Error(codes.InvalidArgument, "an absolute target path is required")
	}
	if err := checkCapability(req.GetVolumeCapability()); err != nil {
		return nil, err
	}
	key := req.GetVolumeId() + "@" + filepath.Clean(req.GetTargetPath())
	if !n.inFlight.tryAcquire(key) {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %s at %s is already in progress", req.GetVolumeId(), req.GetTargetPath())
	}
	defer n.inFlight.release(key)

	preq, p, err := n.buildRequest(req)
	if err != nil {
		return nil, err
	}
	target := preq.Spec.Target
	cur, err := n.mounter.Status(ctx, &mounterapi.StatusRequest{Target: target})
	switch {
	case status.Code(err) == codes.NotFound:
		// A new publish: a profile that refuses the pod fails it here,
		// with IAM's reason, instead of at the pod's first write.
		if err := n.verify(ctx, preq, p); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	case cur.State == mounterapi.StateDead:
		n.logUnhealthy(cur)
		// The mounter refuses it with the reason; its answer is the one to give.
	case cur.Spec.Equivalent(&preq.Spec) && cur.CredentialsDigest == preq.Credentials.Digest(preq.Spec.Auth):
		return &csi.NodePublishVolumeResponse{}, nil // the periodic republish with an unchanged token
	case cur.Spec.Equivalent(&preq.Spec):
		// A renewed token. Check it before installing it: a refused token
		// would only break the server's next refresh while the old one still
		// works. But IAM being unreachable is no reason to keep a token that
		// is about to expire: install it unchecked then.
		if err := n.verify(ctx, preq, p); err != nil {
			if status.Code(err) == codes.PermissionDenied {
				klog.ErrorS(err, "Republish refused; the mount keeps its current credentials", "volumeID", preq.Spec.VolumeID, "target", target)
				return nil, err
			}
			klog.InfoS("IAM could not check the renewed credentials; installing them unchecked", "volumeID", preq.Spec.VolumeID, "target", target, "err", err.Error())
		}
	}
	resp, err := n.mounter.Publish(ctx, preq)
	if err != nil {
		return nil, err
	}
	switch resp.Action {
	case mounterapi.ActionMounted:
		klog.InfoS("Published volume", "volumeID", preq.Spec.VolumeID, "target", target, "pod", klog.KRef(p.PodNamespace, p.PodName), "ephemeral", p.Ephemeral, "serverPID", resp.Volume.PID)
	case mounterapi.ActionCredentialsUpdated:
		klog.V(2).InfoS("Republished volume: credentials replaced", "volumeID", preq.Spec.VolumeID, "target", target)
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

// NodeUnpublishVolume asks the mounter to stop the volume's server and
// unmount. The mounter answers Unavailable while the server still uploads
// data it accepted; kubelet retries, and the pod's deletion waits.
func (n *NodeService) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	if req.GetTargetPath() == "" || !filepath.IsAbs(req.GetTargetPath()) {
		return nil, status.Error(codes.InvalidArgument, "an absolute target path is required")
	}
	target := filepath.Clean(req.GetTargetPath())
	key := req.GetVolumeId() + "@" + target
	if !n.inFlight.tryAcquire(key) {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %s at %s is already in progress", req.GetVolumeId(), target)
	}
	defer n.inFlight.release(key)

	resp, err := n.mounter.Unpublish(ctx, &mounterapi.UnpublishRequest{Target: target, VolumeID: req.GetVolumeId()})
	if status.Code(err) == codes.NotFound {
		// Another volume is published there: this volume is not, which is
		// what the caller wants. Leave the other one alone.
		klog.InfoS("Unpublish of a volume that is not published at the target", "volumeID", req.GetVolumeId(), "target", target, "detail", err.Error())
		return &csi.NodeUnpublishVolumeResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	delete(n.reportedBy, target)
	n.mu.Unlock()
	klog.InfoS("Unpublished volume", "volumeID", req.GetVolumeId(), "target", target, "action", resp.Action)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// NodeGetVolumeStats reports the usage the mounter read from the mount's
// statfs. A volume whose server is gone or stuck has no usage to report:
// that is FailedPrecondition, and NodeGetVolumeHealth says why. The plugin
// itself never touches the mount, so a stuck server cannot stall it.
func (n *NodeService) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	if req.GetVolumePath() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume path is required")
	}
	path := filepath.Clean(req.GetVolumePath())
	if !filepath.IsAbs(path) {
		return nil, status.Errorf(codes.NotFound, "volume %s is not published at %s", req.GetVolumeId(), path)
	}
	st, err := n.mounter.Status(ctx, &mounterapi.StatusRequest{Target: path})
	if status.Code(err) == codes.NotFound || (err == nil && st.VolumeID != req.GetVolumeId()) {
		return nil, status.Errorf(codes.NotFound, "volume %s is not published at %s", req.GetVolumeId(), path)
	}
	if err != nil {
		return nil, err
	}
	if st.State != mounterapi.StateHealthy || st.Usage == nil {
		n.logUnhealthy(st)
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s at %s is %s: %s", req.GetVolumeId(), path, st.State, st.Message)
	}
	u := st.Usage
	return &csi.NodeGetVolumeStatsResponse{
		Usage: []*csi.VolumeUsage{
			{Unit: csi.VolumeUsage_BYTES, Total: u.BytesTotal, Available: u.BytesAvailable, Used: u.BytesUsed},
			{Unit: csi.VolumeUsage_INODES, Total: u.InodesTotal, Available: u.InodesAvailable, Used: u.InodesUsed},
		},
	}, nil
}

// NodeGetVolumeHealth reports a volume INACCESSIBLE on this node when the
// server of any of its mounts here is gone (with the mounter's reason:
// killed, OOM-killed, exited, ended with the mounter) or does not answer; an
// empty list means healthy. Without a publish path every mount of the
// volume on this node is checked.
func (n *NodeService) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	var vols []mounterapi.VolumeStatus
	if p := req.GetVolumePublishPath(); p != "" {
		st, err := n.mounter.Status(ctx, &mounterapi.StatusRequest{Target: filepath.Clean(p)})
		if err != nil && status.Code(err) != codes.NotFound {
			return nil, err
		}
		if err == nil {
			vols = append(vols, *st)
		}
	} else {
		list, err := n.mounter.List(ctx, &mounterapi.ListRequest{VolumeID: id})
		if err != nil {
			return nil, err
		}
		vols = list.Volumes
	}
	health := &csi.VolumeHealth{VolumeId: id}
	found := false
	seen := map[string]bool{}
	for i := range vols {
		v := &vols[i]
		if v.VolumeID != id {
			continue
		}
		found = true
		if v.State == mounterapi.StateHealthy || v.State == mounterapi.StateStopping {
			continue
		}
		n.logUnhealthy(v)
		if seen[v.Reason] {
			continue // one entry per (status, reason), as the spec demands
		}
		seen[v.Reason] = true
		health.HealthStatuses = append(health.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{
			Status: csi.VolumeHealthErrorType_INACCESSIBLE, Reason: v.Reason,
			Message: fmt.Sprintf("%s (at %s)", v.Message, v.Target),
		})
	}
	if !found {
		return nil, status.Errorf(codes.NotFound, "volume %s is not published on this node", id)
	}
	return &csi.NodeGetVolumeHealthResponse{VolumeHealth: health}, nil
}

// logUnhealthy logs an unhealthy volume once per reason, so that the
// plugin's log says what the pod sees without repeating it at every call.
func (n *NodeService) logUnhealthy(v *mounterapi.VolumeStatus) {
	n.mu.Lock()
	seen := n.reportedBy[v.Target] == v.Reason
	n.reportedBy[v.Target] = v.Reason
	n.mu.Unlock()
	if seen {
		return
	}
	klog.ErrorS(nil, "Volume is not usable on this node; the pod sees I/O errors until it is deleted and the volume unpublished",
		"volumeID", v.VolumeID, "target", v.Target, "state", v.State, "reason", v.Reason, "message", v.Message)
}
