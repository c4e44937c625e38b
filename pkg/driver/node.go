package driver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/iam"
	"github.com/cosmount/cosmount/pkg/mounter"
)

// Mounter is what the node service needs from pkg/mounter.
type Mounter interface {
	Status(target string) (mounter.Status, error)
	Compatible(v mounter.Volume, rec *mounter.Record) bool
	Mount(ctx context.Context, v mounter.Volume) error
	SameCredentials(target string, c mounter.Credentials) (bool, error)
	UpdateCredentials(target string, c mounter.Credentials) error
	Unmount(ctx context.Context, target string) error
	Records() ([]mounter.Record, error)
}

// Default permissions of cosmount, widened for the group when the CO asks
// for a volume mount group (fsGroup).
const (
	defaultFileMode = 0o644
	defaultDirMode  = 0o755
)

// NodeService implements the CSI Node service.
type NodeService struct {
	csi.UnimplementedNodeServer

	nodeID      string
	audience    string
	iamEndpoint string
	mounter     Mounter
	verifier    IdentityVerifier
	inFlight    *inFlight
}

// NewNodeService returns the node service. opts supplies the node ID, token
// audience and default IAM endpoint.
func NewNodeService(opts Options, m Mounter, v IdentityVerifier) *NodeService {
	return &NodeService{
		nodeID:      opts.NodeID,
		audience:    opts.TokenAudience,
		iamEndpoint: opts.IAMEndpoint,
		mounter:     m,
		verifier:    v,
		inFlight:    newInFlight(),
	}
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

// buildVolume turns a publish request into the mounter's typed volume.
func (n *NodeService) buildVolume(req *csi.NodePublishVolumeRequest) (mounter.Volume, VolumeParams, error) {
	p, err := parseVolumeParams(req.GetVolumeContext())
	if err != nil {
		return mounter.Volume{}, p, err
	}
	if p.Bucket == "" {
		return mounter.Volume{}, p, invalid(attrBucket, "is required")
	}
	if p.Endpoint == "" {
		return mounter.Volume{}, p, invalid(attrEndpoint, "is required")
	}
	capability := req.GetVolumeCapability()
	flags, err := parseMountFlags(capability.GetMount().GetMountFlags())
	if err != nil {
		return mounter.Volume{}, p, err
	}
	if group := capability.GetMount().GetVolumeMountGroup(); group != "" {
		if _, err := strconv.ParseUint(group, 10, 32); err != nil {
			return mounter.Volume{}, p, status.Errorf(codes.InvalidArgument, "volume mount group %q is not a numeric group ID", group)
		}
		// fsGroup: files belong to the group and the group may write them.
		flags.values["gid"] = group
		flags.values["file_mode"] = widenMode(flags.values["file_mode"], defaultFileMode, 0o060)
		flags.values["dir_mode"] = widenMode(flags.values["dir_mode"], defaultDirMode, 0o070)
	}
	options := make([]string, 0, len(flags.values)+2)
	for k, v := range flags.values {
		options = append(options, k+"="+v)
	}
	sort.Strings(options)
	// Pods run as arbitrary users; without allow_other only root could use the mount.
	options = append(options, "allow_other")
	if req.GetReadonly() || flags.readOnly || readerOnly(capability.GetAccessMode()) {
		options = append(options, "ro")
	}
	iamEndpoint := p.IAMEndpoint
	if iamEndpoint == "" {
		iamEndpoint = n.iamEndpoint
	}
	v := mounter.Volume{
		VolumeID:    req.GetVolumeId(),
		Target:      filepath.Clean(req.GetTargetPath()),
		Bucket:      p.Bucket,
		Prefix:      p.Prefix,
		Endpoint:    p.Endpoint,
		Region:      p.Region,
		IAMEndpoint: iamEndpoint,
		Auth:        p.AuthType,
		ProfileID:   p.ProfileID,
		ProfileName: p.ProfileName,
		ProfileCRN:  p.ProfileCRN,
		Options:     options,
	}
	secrets := req.GetSecrets()
	switch p.AuthType {
	case mounter.AuthTrustedProfile:
		v.Credentials.CRToken, err = podToken(secrets, req.GetVolumeContext(), n.audience)
	case mounter.AuthAPIKey:
		v.Credentials.APIKey = secrets[secretAPIKey]
		if strings.TrimSpace(v.Credentials.APIKey) == "" {
			err = status.Errorf(codes.InvalidArgument, "authType apiKey needs the secret key %q (nodePublishSecretRef)", secretAPIKey)
		}
	case mounter.AuthHMAC:
		v.Credentials.AccessKeyID, v.Credentials.SecretAccessKey = secrets[secretAccessKeyID], secrets[secretSecretAccessKey]
		switch {
		case v.Credentials.AccessKeyID == "" || v.Credentials.SecretAccessKey == "":
			err = status.Errorf(codes.InvalidArgument, "authType hmac needs the secret keys %q and %q (nodePublishSecretRef)", secretAccessKeyID, secretSecretAccessKey)
		case strings.ContainsAny(v.Credentials.AccessKeyID, ":\n\r"):
			err = status.Errorf(codes.InvalidArgument, "secret %q must not contain ':' or a newline", secretAccessKeyID)
		}
	}
	return v, p, err
}

// widenMode adds bits to an octal mode string (or the default when empty).
func widenMode(cur string, def, add uint64) string {
	m := def
	if cur != "" {
		if n, err := strconv.ParseUint(cur, 8, 32); err == nil {
			m = n
		}
	}
	return fmt.Sprintf("%04o", m|add)
}

// verify exchanges the volume's credentials at IAM once.
func (n *NodeService) verify(ctx context.Context, v mounter.Volume, p VolumeParams) error {
	var err error
	var what string
	switch v.Auth {
	case mounter.AuthTrustedProfile:
		profile := iam.Profile{ID: v.ProfileID, Name: v.ProfileName, CRN: v.ProfileCRN}
		what = fmt.Sprintf("the token of pod %s/%s (service account %s) for trusted profile %s", p.PodNamespace, p.PodName, p.ServiceAccount, profile)
		err = n.verifier.VerifyTrustedProfile(ctx, v.IAMEndpoint, profile, v.Credentials.CRToken)
	case mounter.AuthAPIKey:
		what = "the API key"
		err = n.verifier.VerifyAPIKey(ctx, v.IAMEndpoint, v.Credentials.APIKey)
	default:
		return nil // HMAC keys are checked by COS on the first request
	}
	if err != nil {
		return verifyError(what, err)
	}
	return nil
}

// NodePublishVolume mounts the volume at the target, or on a republish of
// the same volume only swaps the credential file.
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

	v, p, err := n.buildVolume(req)
	if err != nil {
		return nil, err
	}
	st, err := n.mounter.Status(v.Target)
	if err != nil {
		return nil, fmt.Errorf("inspect target %s: %w", v.Target, err)
	}
	switch {
	case st.Record != nil && (st.State == mounter.Healthy || st.State == mounter.Unresponsive):
		return n.republish(ctx, v, p, st.Record)
	case st.State == mounter.Dead || st.Record != nil:
		// The server crashed (or vanished with its mount): its mount is
		// useless, so replace it. This is not a remount of a live volume.
		klog.InfoS("Replacing a dead mount", "volumeID", v.VolumeID, "target", v.Target, "state", st.State.String())
		if err := n.mounter.Unmount(ctx, v.Target); err != nil {
			return nil, fmt.Errorf("clean up the dead mount at %s: %w", v.Target, err)
		}
	case st.State != mounter.NotMounted:
		return nil, status.Errorf(codes.FailedPrecondition, "target %s is %s and not published by this plugin", v.Target, st.State)
	}

	if err := n.verify(ctx, v, p); err != nil {
		return nil, err
	}
	created, err := ensureDir(v.Target)
	if err != nil {
		return nil, err
	}
	if err := n.mounter.Mount(ctx, v); err != nil {
		if created {
			os.Remove(v.Target)
		}
		return nil, fmt.Errorf("mount volume %s at %s: %w", v.VolumeID, v.Target, err)
	}
	klog.InfoS("Published volume", "volumeID", v.VolumeID, "target", v.Target, "pod", klog.KRef(p.PodNamespace, p.PodName), "ephemeral", p.Ephemeral)
	return &csi.NodePublishVolumeResponse{}, nil
}

// republish handles NodePublishVolume on a target that is already served:
// it only replaces the credential file, and never unmounts, whatever
// happens, because unmounting a live volume under a running pod loses data.
func (n *NodeService) republish(ctx context.Context, v mounter.Volume, p VolumeParams, rec *mounter.Record) (*csi.NodePublishVolumeResponse, error) {
	if !n.mounter.Compatible(v, rec) {
		return nil, status.Errorf(codes.AlreadyExists, "target %s already serves volume %s with different parameters", v.Target, rec.VolumeID)
	}
	same, err := n.mounter.SameCredentials(v.Target, v.Credentials)
	if err != nil {
		return nil, fmt.Errorf("compare credentials of %s: %w", v.Target, err)
	}
	if same {
		return &csi.NodePublishVolumeResponse{}, nil
	}
	// Check the renewed token before installing it: a refused token would
	// only break the server's next refresh, while the old one still works.
	if err := n.verify(ctx, v, p); err != nil {
		klog.ErrorS(err, "Republish refused; the mount keeps its current credentials", "volumeID", v.VolumeID, "target", v.Target)
		return nil, err
	}
	if err := n.mounter.UpdateCredentials(v.Target, v.Credentials); err != nil {
		return nil, fmt.Errorf("replace credentials of %s: %w", v.Target, err)
	}
	klog.V(2).InfoS("Republished volume: credentials replaced", "volumeID", v.VolumeID, "target", v.Target)
	return &csi.NodePublishVolumeResponse{}, nil
}

// ensureDir creates the target directory if needed and reports whether it did.
func ensureDir(path string) (bool, error) {
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		return false, nil
	case err == nil:
		return false, status.Errorf(codes.InvalidArgument, "target %s exists and is not a directory", path)
	case !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("stat target: %w", err)
	}
	if err := os.MkdirAll(path, 0o750); err != nil {
		return false, fmt.Errorf("create target: %w", err)
	}
	return true, nil
}

// NodeUnpublishVolume stops the volume's server (which flushes and
// unmounts), removes any mount left, dead ones included, the state and the
// target directory. It succeeds when there is nothing to do.
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

	if err := n.mounter.Unmount(ctx, target); err != nil {
		return nil, fmt.Errorf("unmount %s: %w", target, err)
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("remove target %s: %w", target, err)
	}
	klog.InfoS("Unpublished volume", "volumeID", req.GetVolumeId(), "target", target)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// NodeGetVolumeStats reports usage from statfs of a live mount. A mount
// whose server is gone has no usage to report: that is FailedPrecondition,
// and NodeGetVolumeHealth says why.
func (n *NodeService) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	if req.GetVolumePath() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume path is required")
	}
	path := filepath.Clean(req.GetVolumePath())
	st, err := n.mounter.Status(path)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", path, err)
	}
	if st.Record == nil || st.Record.VolumeID != req.GetVolumeId() {
		return nil, status.Errorf(codes.NotFound, "volume %s is not published at %s", req.GetVolumeId(), path)
	}
	if st.State != mounter.Healthy {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s at %s is %s", req.GetVolumeId(), path, st.State)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(path, &sfs); err != nil {
		return nil, fmt.Errorf("statfs %s: %w", path, err)
	}
	bsize := int64(sfs.Bsize)
	return &csi.NodeGetVolumeStatsResponse{
		Usage: []*csi.VolumeUsage{
			{Unit: csi.VolumeUsage_BYTES, Total: int64(sfs.Blocks) * bsize, Available: int64(sfs.Bavail) * bsize, Used: int64(sfs.Blocks-sfs.Bfree) * bsize},
			{Unit: csi.VolumeUsage_INODES, Total: int64(sfs.Files), Available: int64(sfs.Ffree), Used: int64(sfs.Files - sfs.Ffree)},
		},
	}, nil
}

// NodeGetVolumeHealth reports a volume as INACCESSIBLE on this node when
// the server of any of its mounts here is gone (ENOTCONN), exited or does
// not answer; an empty list means healthy. Without a publish path every
// mount of the volume on this node is checked.
func (n *NodeService) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	var targets []string
	if p := req.GetVolumePublishPath(); p != "" {
		targets = []string{filepath.Clean(p)}
	} else {
		recs, err := n.mounter.Records()
		if err != nil {
			return nil, fmt.Errorf("list published volumes: %w", err)
		}
		for _, r := range recs {
			if r.VolumeID == id {
				targets = append(targets, r.Target)
			}
		}
	}
	health := &csi.VolumeHealth{VolumeId: id}
	found := false
	seen := map[string]bool{}
	for _, t := range targets {
		st, err := n.mounter.Status(t)
		if err != nil {
			return nil, fmt.Errorf("inspect %s: %w", t, err)
		}
		if st.Record == nil || st.Record.VolumeID != id {
			continue
		}
		found = true
		if st.State == mounter.Healthy {
			continue
		}
		reason, msg := "ServerUnresponsive", "the cosmount server at "+t+" does not answer"
		switch st.State {
		case mounter.Dead:
			reason, msg = "ServerGone", "the cosmount server of "+t+" is gone; the mount answers ENOTCONN"
		case mounter.NotMounted:
			reason, msg = "NotMounted", "the cosmount server of "+t+" exited and the volume is no longer mounted"
		}
		if seen[reason] {
			continue // one entry per (status, reason), as the spec demands
		}
		seen[reason] = true
		health.HealthStatuses = append(health.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{
			Status: csi.VolumeHealthErrorType_INACCESSIBLE, Reason: reason, Message: msg,
		})
	}
	if !found {
		return nil, status.Errorf(codes.NotFound, "volume %s is not published on this node", id)
	}
	return &csi.NodeGetVolumeHealthResponse{VolumeHealth: health}, nil
}
