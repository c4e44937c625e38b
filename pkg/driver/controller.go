package driver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/volume"
)

// ObjectStore is the part of pkg/cos the controller uses.
type ObjectStore interface {
	HeadBucket(ctx context.Context, bucket string) error
	CreateBucket(ctx context.Context, bucket, locationConstraint string) error
	SetAbortIncompleteUploads(ctx context.Context, bucket string, days int32) error
	EmptyAndDeleteBucket(ctx context.Context, bucket string) error
	HeadObject(ctx context.Context, bucket, key string) (cos.ObjectInfo, error)
	PutObject(ctx context.Context, bucket, key string, body io.ReadSeeker, size int64, o cos.PutOptions) (cos.ObjectInfo, error)
	ListObjects(ctx context.Context, bucket string, o cos.ListOptions) (cos.ListPage, error)
	DeleteObjects(ctx context.Context, bucket string, keys []string) error
}

// StoreConfig selects a COS endpoint and the identity the controller uses there.
type StoreConfig struct {
	Endpoint          string
	Region            string
	ServiceInstanceID string
	// APIKey comes from the provisioner secret; empty means the
	// controller's own trusted profile.
	APIKey string
}

// String keeps the API key out of logs.
func (c StoreConfig) String() string {
	return fmt.Sprintf("{Endpoint:%s Region:%s ServiceInstanceID:%s APIKey:%t}", c.Endpoint, c.Region, c.ServiceInstanceID, c.APIKey != "")
}

// StoreFactory hands out object stores; NewCOSStores is the real one.
type StoreFactory interface {
	Store(ctx context.Context, cfg StoreConfig) (ObjectStore, error)
}

// Metadata on a prefix-mode marker object: which volume owns the prefix
// and with which parameters it was created, for idempotent CreateVolume.
const (
	metaVolumeName = "cosmount-volume-name"
	metaParams     = "cosmount-params"
)

// ControllerService implements the CSI Controller service: buckets or
// prefixes per volume.
//
// Volume IDs say how the volume was made and where it lives, because
// DeleteVolume gets nothing but the ID and secrets:
//
//	bucket:<bucket>@<endpoint>           a bucket this driver created
//	prefix:<bucket>/<prefix>@<endpoint>  a prefix inside an existing bucket
//
// where <endpoint> is "ibm:<region or private.region ...>" for IBM's public
// endpoint names and the URL otherwise. Only IDs of these forms are ever
// deleted, so a static PV naming someone's bucket is never emptied.
type ControllerService struct {
	csi.UnimplementedControllerServer

	stores   StoreFactory
	inFlight *inFlight
	// iamEndpoints and cosEndpoints are the admin's endpoint rules, applied
	// to parameters and to every endpoint decoded from a volume ID.
	iamEndpoints *EndpointPolicy
	cosEndpoints *EndpointPolicy

	mu sync.Mutex
	// created remembers this process's answers by volume name, so a repeated
	// CreateVolume with other parameters is AlreadyExists even in bucket mode,
	// where nothing in COS records the parameters.
	created map[string]createdVolume
}

type createdVolume struct {
	fingerprint string
	volume      *csi.Volume
}

// NewControllerService returns the controller service; opts supplies the
// endpoint rules and must have passed Validate.
func NewControllerService(opts Options, stores StoreFactory) (*ControllerService, error) {
	iamPolicy, cosPolicy, err := opts.endpointPolicies()
	if err != nil {
		return nil, err
	}
	return &ControllerService{stores: stores, inFlight: newInFlight(), created: map[string]createdVolume{},
		iamEndpoints: iamPolicy, cosEndpoints: cosPolicy}, nil
}

// ControllerGetCapabilities: create and delete only; there is nothing to attach.
func (c *ControllerService) ControllerGetCapabilities(ctx context.Context, req *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{{
		Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME}},
	}}}, nil
}

// CreateVolume provisions a bucket (provisioning: bucket, the default
// without bucketName) or a prefix in bucketName (provisioning: prefix).
// Capacity is accepted and reported back; COS has no quota to set.
func (c *ControllerService) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	name := req.GetName()
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "volume name is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume capabilities are required")
	}
	for _, vc := range req.GetVolumeCapabilities() {
		if err := checkCapability(vc); err != nil {
			return nil, err
		}
	}
	if req.GetVolumeContentSource() != nil {
		return nil, status.Error(codes.InvalidArgument, "volume content sources (snapshots, clones) are not supported")
	}
	capacity := req.GetCapacityRange().GetRequiredBytes()
	if limit := req.GetCapacityRange().GetLimitBytes(); limit > 0 && capacity > limit {
		return nil, status.Errorf(codes.InvalidArgument, "required bytes %d exceed limit bytes %d", capacity, limit)
	}
	if !c.inFlight.tryAcquire("create/" + name) {
		return nil, status.Errorf(codes.Aborted, "CreateVolume %s is already in progress", name)
	}
	defer c.inFlight.release("create/" + name)

	p, err := parseVolumeParams(req.GetParameters())
	if err != nil {
		return nil, err
	}
	// The controller's credentials go only to an endpoint the admin allows,
	// and the PV records an IAM endpoint the node plugin will accept.
	if p.Endpoint, err = c.cosEndpoints.Resolve(p.Endpoint); err != nil {
		return nil, err
	}
	if p.IAMEndpoint != "" {
		if err := c.iamEndpoints.Check(p.IAMEndpoint); err != nil {
			return nil, invalid(attrIAMEndpoint, "%v", err)
		}
	}
	mode := p.Provisioning
	if mode == "" {
		mode = provisionBucket
		if p.Bucket != "" {
			mode = provisionPrefix
		}
	}
	switch {
	case mode == provisionBucket && p.Bucket != "":
		return nil, invalid(attrBucket, "must not be set with provisioning: bucket; the driver names each bucket")
	case mode == provisionPrefix && p.Bucket == "":
		return nil, invalid(attrBucket, "is required with provisioning: prefix")
	case mode == provisionPrefix && p.LocationConstraint != "":
		return nil, invalid(attrLocationConstraint, "only applies to provisioning: bucket")
	}
	fp := paramsFingerprint(req.GetParameters(), capacity)

	c.mu.Lock()
	prev, known := c.created[name]
	c.mu.Unlock()
	if known {
		if prev.fingerprint != fp {
			return nil, status.Errorf(codes.AlreadyExists, "volume %s exists with different parameters or capacity", name)
		}
		return &csi.CreateVolumeResponse{Volume: prev.volume}, nil
	}

	store, err := c.stores.Store(ctx, StoreConfig{Endpoint: p.Endpoint, Region: p.Region, ServiceInstanceID: p.ServiceInstanceID, APIKey: req.GetSecrets()[secretAPIKey]})
	if err != nil {
		return nil, err
	}
	base := volumeBaseName(p.PVCNamespace, p.PVCName, name)
	var id string
	vp := p
	if mode == provisionBucket {
		vp.Bucket = base
		if err := createBucket(ctx, store, base, p.LocationConstraint); err != nil {
			return nil, err
		}
		id = "bucket:" + base + "@" + compactEndpoint(p.Endpoint)
	} else {
		vp.Prefix = prefixVolumePath(p.Prefix, p.PVCNamespace, p.PVCName, name)
		id = "prefix:" + p.Bucket + "/" + vp.Prefix + "@" + compactEndpoint(p.Endpoint)
		if len(id) > maxVolumeIDLength {
			return nil, invalid(attrPrefix, "bucket %s, prefix %q and endpoint %s leave no room for the volume's prefix in a %d-byte volume ID", p.Bucket, p.Prefix, p.Endpoint, maxVolumeIDLength)
		}
		if err := createPrefix(ctx, store, p.Bucket, vp.Prefix, name, fp); err != nil {
			return nil, err
		}
	}
	vol := &csi.Volume{VolumeId: id, CapacityBytes: capacity, VolumeContext: vp.nodeAttributes()}
	c.mu.Lock()
	c.created[name] = createdVolume{fingerprint: fp, volume: vol}
	c.mu.Unlock()
	klog.InfoS("Created volume", "name", name, "volumeID", id, "mode", mode)
	return &csi.CreateVolumeResponse{Volume: vol}, nil
}

// abortIncompleteUploadsDays is the age at which the lifecycle rule of a
// bucket the controller creates aborts a multipart upload: the parts of an
// upload no server completes (a crashed one whose journal was lost with its
// node) stop costing money then. A live upload of a few TiB fits well within.
const abortIncompleteUploadsDays = 7

func createBucket(ctx context.Context, store ObjectStore, bucket, location string) error {
	if err := createBucketOnce(ctx, store, bucket, location); err != nil {
		return err
	}
	// Also for a bucket an earlier attempt made: its answer (and this
	// call) may have been lost.
	if err := store.SetAbortIncompleteUploads(ctx, bucket, abortIncompleteUploadsDays); err != nil {
		return fmt.Errorf("bucket %s: set the lifecycle rule that aborts incomplete uploads: %w", bucket, err)
	}
	return nil
}

func createBucketOnce(ctx context.Context, store ObjectStore, bucket, location string) error {
	err := store.CreateBucket(ctx, bucket, location)
	if err == nil || !errors.Is(err, cos.ErrBucketAlreadyExists) {
		return err
	}
	// The name is derived from the volume name (pvc-<uid>), so a bucket of
	// that name that our identity can use is this volume's bucket from an
	// earlier attempt whose answer was lost. One we cannot use belongs to
	// someone else.
	if herr := store.HeadBucket(ctx, bucket); herr != nil {
		return status.Errorf(codes.AlreadyExists, "bucket name %s is taken by another account: %v", bucket, err)
	}
	klog.InfoS("Bucket exists already; taking it as this volume's", "bucket", bucket)
	return nil
}

func createPrefix(ctx context.Context, store ObjectStore, bucket, prefix, name, fp string) error {
	if err := store.HeadBucket(ctx, bucket); err != nil {
		if errors.Is(err, cos.ErrNotFound) {
			return invalid(attrBucket, "bucket %s does not exist", bucket)
		}
		return err
	}
	marker := prefix + "/"
	for attempt := 0; attempt < 2; attempt++ {
		info, err := store.HeadObject(ctx, bucket, marker)
		if err == nil {
			if info.Metadata[metaVolumeName] != name || info.Metadata[metaParams] != fp {
				return status.Errorf(codes.AlreadyExists, "prefix %s in bucket %s exists for another volume or with different parameters", prefix, bucket)
			}
			return nil
		}
		if !errors.Is(err, cos.ErrNotFound) {
			return err
		}
		_, err = store.PutObject(ctx, bucket, marker, bytes.NewReader(nil), 0, cos.PutOptions{
			ContentType: "application/x-directory",
			Metadata:    map[string]string{metaVolumeName: name, metaParams: fp},
			IfNoneMatch: "*",
		})
		if err == nil {
			return nil
		}
		if !errors.Is(err, cos.ErrPreconditionFailed) {
			return err
		}
		// Someone created the marker meanwhile: compare with theirs.
	}
	return status.Errorf(codes.Aborted, "prefix %s in bucket %s changed during creation", prefix, bucket)
}

// DeleteVolume empties and deletes a bucket this driver created, or deletes
// every key under a provisioned prefix. Unknown and already deleted volumes
// are success.
func (c *ControllerService) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	ref, ok := parseVolumeID(id)
	if !ok {
		klog.InfoS("DeleteVolume of a volume this driver did not create; nothing to do", "volumeID", id)
		return &csi.DeleteVolumeResponse{}, nil
	}
	if err := c.checkVolumeRef(id, ref); err != nil {
		return nil, err
	}
	if !c.inFlight.tryAcquire("volume/" + id) {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %s is already in progress", id)
	}
	defer c.inFlight.release("volume/" + id)

	store, err := c.stores.Store(ctx, StoreConfig{Endpoint: ref.endpoint, APIKey: req.GetSecrets()[secretAPIKey]})
	if err != nil {
		return nil, err
	}
	if ref.prefix == "" {
		err = store.EmptyAndDeleteBucket(ctx, ref.bucket)
	} else {
		err = deletePrefix(ctx, store, ref.bucket, ref.prefix+"/", id)
	}
	if err != nil && !errors.Is(err, cos.ErrNotFound) {
		return nil, err
	}
	c.mu.Lock()
	for name, cv := range c.created {
		if cv.volume.GetVolumeId() == id {
			delete(c.created, name)
		}
	}
	c.mu.Unlock()
	klog.InfoS("Deleted volume", "volumeID", id)
	return &csi.DeleteVolumeResponse{}, nil
}

// deletePrefix deletes every key under prefix if its marker says this
// driver made it: a volume ID written by hand cannot make the controller
// empty a prefix it did not provision. The marker goes last, so that a
// deletion cut short is finished by the next DeleteVolume. Each round lists
// from the start because the previous page's keys are gone.
func deletePrefix(ctx context.Context, store ObjectStore, bucket, prefix, id string) error {
	info, err := store.HeadObject(ctx, bucket, prefix)
	if errors.Is(err, cos.ErrNotFound) {
		klog.InfoS("DeleteVolume: the prefix has no cosmount marker (already deleted, or not provisioned by this driver); nothing deleted", "volumeID", id)
		return nil
	}
	if err != nil {
		return err
	}
	if info.Metadata[metaVolumeName] == "" {
		return status.Errorf(codes.FailedPrecondition, "volume %s: the object %s in bucket %s is not a cosmount volume marker; refusing to delete the prefix", id, prefix, bucket)
	}
	for {
		page, err := store.ListObjects(ctx, bucket, cos.ListOptions{Prefix: prefix, MaxKeys: 1000})
		if err != nil {
			return err
		}
		keys := make([]string, 0, len(page.Objects))
		for _, o := range page.Objects {
			if o.Key != prefix {
				keys = append(keys, o.Key)
			}
		}
		if len(keys) == 0 {
			return store.DeleteObjects(ctx, bucket, []string{prefix})
		}
		if err := store.DeleteObjects(ctx, bucket, keys); err != nil {
			return err
		}
	}
}

// ValidateVolumeCapabilities confirms mount capabilities of an existing volume.
func (c *ControllerService) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume capabilities are required")
	}
	ref, ok := parseVolumeID(id)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "volume %s was not created by this driver", id)
	}
	if err := c.checkVolumeRef(id, ref); err != nil {
		return nil, err
	}
	store, err := c.stores.Store(ctx, StoreConfig{Endpoint: ref.endpoint, APIKey: req.GetSecrets()[secretAPIKey]})
	if err != nil {
		return nil, err
	}
	if ref.prefix == "" {
		err = store.HeadBucket(ctx, ref.bucket)
	} else {
		_, err = store.HeadObject(ctx, ref.bucket, ref.prefix+"/")
	}
	if errors.Is(err, cos.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "volume %s does not exist", id)
	}
	if err != nil {
		return nil, err
	}
	for _, vc := range req.GetVolumeCapabilities() {
		if err := checkCapability(vc); err != nil {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: status.Convert(err).Message()}, nil
		}
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

var nonDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// volumeBaseName derives a DNS-safe bucket or prefix name. With the PVC's
// namespace and name (--extra-create-metadata) it reads "<ns>-<name>-<hash>",
// else it is the volume name (pvc-<uid>) if that is already DNS-safe. The
// hash of the volume name keeps names unique: bucket names are global
// across every COS customer.
func volumeBaseName(pvcNamespace, pvcName, volumeName string) string {
	sum := sha256.Sum256([]byte(volumeName))
	hash := hex.EncodeToString(sum[:])[:16]
	if pvcNamespace == "" || pvcName == "" {
		if len(volumeName) >= 3 && len(volumeName) <= 63 && !nonDNS.MatchString(volumeName) &&
			strings.Trim(volumeName, "-") == volumeName && strings.ToLower(volumeName) == volumeName {
			return volumeName
		}
		return dnsJoin(volumeName, hash)
	}
	return dnsJoin(pvcNamespace+"-"+pvcName, hash)
}

// dnsJoin lowercases and cleans readable, truncates it so that
// "<readable>-<hash>" fits in 63 characters, and appends the hash.
func dnsJoin(readable, hash string) string {
	r := strings.Trim(nonDNS.ReplaceAllString(strings.ToLower(readable), "-"), "-")
	if max := 63 - 1 - len(hash); len(r) > max {
		r = strings.TrimRight(r[:max], "-")
	}
	if r == "" {
		r = "vol"
	}
	return r + "-" + hash
}

const (
	ibmEndpointPrefix = "https://s3."
	ibmEndpointSuffix = ".cloud-object-storage.appdomain.cloud"
)

// compactEndpoint shortens IBM endpoint URLs for volume IDs (the CSI size
// limit for IDs is 128 bytes).
func compactEndpoint(ep string) string {
	if strings.HasPrefix(ep, ibmEndpointPrefix) && strings.HasSuffix(ep, ibmEndpointSuffix) {
		mid := strings.TrimSuffix(strings.TrimPrefix(ep, ibmEndpointPrefix), ibmEndpointSuffix)
		if mid != "" && !strings.ContainsAny(mid, "/:@") {
			return "ibm:" + mid
		}
	}
	return ep
}

func expandEndpoint(s string) string {
	if rest, ok := strings.CutPrefix(s, "ibm:"); ok {
		return ibmEndpointPrefix + rest + ibmEndpointSuffix
	}
	return s
}

type volumeRef struct {
	bucket   string
	prefix   string // empty for bucket mode
	endpoint string
}

// parseVolumeID recognizes the IDs CreateVolume hands out.
func parseVolumeID(id string) (volumeRef, bool) {
	mode, rest, ok := strings.Cut(id, ":")
	if !ok {
		return volumeRef{}, false
	}
	loc, ep, ok := strings.Cut(rest, "@")
	if !ok {
		return volumeRef{}, false
	}
	ref := volumeRef{endpoint: expandEndpoint(ep)}
	if volume.CheckURL(ref.endpoint) != nil {
		return volumeRef{}, false
	}
	switch mode {
	case provisionBucket:
		ref.bucket = loc
	case provisionPrefix:
		var prefix string
		ref.bucket, prefix, ok = strings.Cut(loc, "/")
		p, err := cleanPrefix(prefix)
		if !ok || err != nil || p == "" || p != prefix {
			return volumeRef{}, false
		}
		ref.prefix = p
	default:
		return volumeRef{}, false
	}
	if volume.CheckBucket(ref.bucket) != nil {
		return volumeRef{}, false
	}
	return ref, true
}
