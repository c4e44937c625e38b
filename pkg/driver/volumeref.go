package driver

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cosmount/cosmount/pkg/volume"
)

// dnsLabelRE is a namespace name.
var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// maxVolumeIDLength is the CSI limit for volume IDs.
const maxVolumeIDLength = 128

// generatedBucketRE is the form of every bucket CreateVolume names: the
// volume name (pvc-<uid>) or "<readable>-<16 hex digits>" (volumeBaseName).
var generatedBucketRE = regexp.MustCompile(`^(pvc-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z0-9][a-z0-9-]*-[0-9a-f]{16})$`)

// checkVolumeRef applies the admin's rules to what a volume ID says, before
// the controller sends its credentials anywhere: the endpoint must be one
// the admin allows, and a bucket-mode ID must name a bucket of the form
// CreateVolume gives them. A volume ID is not trusted input: a PV written
// by hand with reclaim policy Delete carries whatever its author chose.
func (c *ControllerService) checkVolumeRef(id string, ref volumeRef) error {
	if err := c.cosEndpoints.Check(ref.endpoint); err != nil {
		return status.Errorf(codes.InvalidArgument, "volume ID %q: %s: %v", id, attrEndpoint, err)
	}
	if err := volume.CheckBucket(ref.bucket); err != nil {
		return status.Errorf(codes.InvalidArgument, "volume ID %q: %s: %v", id, attrBucket, err)
	}
	if ref.prefix == "" && !generatedBucketRE.MatchString(ref.bucket) {
		return status.Errorf(codes.InvalidArgument, "volume ID %q: %s: %q is not a bucket this driver names, refusing to delete it", id, attrBucket, ref.bucket)
	}
	return nil
}

// prefixVolumePath is the key prefix of a new prefix-mode volume: below
// the StorageClass's prefix, one level per namespace, then the claim's
// name and a hash of the volume name. The namespace level is what lets an
// IAM policy confine a namespace's profile to its own volumes with a path
// condition such as "volumes/team-a/*", which no other namespace's names
// can match (team-a-b's volumes live under "volumes/team-a-b/"). Without
// the claim's namespace (csi-provisioner without --extra-create-metadata)
// the volume is "<prefix>/<volume name>".
func prefixVolumePath(base, pvcNamespace, pvcName, volumeName string) string {
	var leaf string
	if !dnsLabelRE.MatchString(pvcNamespace) || pvcName == "" {
		leaf = volumeBaseName("", "", volumeName)
	} else {
		sum := sha256.Sum256([]byte(volumeName))
		leaf = pvcNamespace + "/" + dnsJoin(pvcName, hex.EncodeToString(sum[:])[:16])
	}
	return strings.TrimPrefix(base+"/"+leaf, "/")
}
