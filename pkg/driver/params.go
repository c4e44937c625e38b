package driver

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cosmount/cosmount/pkg/volume"
)

// Volume attribute keys (PV volumeAttributes, StorageClass parameters and
// inline volume attributes share them).
const (
	attrBucket             = "bucketName"
	attrPrefix             = "prefix"
	attrEndpoint           = "cosEndpoint"
	attrRegion             = "region"
	attrIAMEndpoint        = "iamEndpoint"
	attrAuthType           = "authType"
	attrProfileID          = "trustedProfileID"
	attrProfileName        = "trustedProfileName"
	attrProfileCRN         = "trustedProfileCRN"
	attrLocationConstraint = "locationConstraint"
	attrServiceInstanceID  = "serviceInstanceID"
	attrProvisioning       = "provisioning"

	// Keys Kubernetes adds; everything under this prefix belongs to
	// Kubernetes and unknown ones are ignored, not rejected.
	k8sPrefix        = "csi.storage.k8s.io/"
	k8sStoragePrefix = "storage.kubernetes.io/"
	keyTokens        = k8sPrefix + "serviceAccount.tokens"
	keyPodName       = k8sPrefix + "pod.name"
	keyPodNamespace  = k8sPrefix + "pod.namespace"
	keyPodUID        = k8sPrefix + "pod.uid"
	keySAName        = k8sPrefix + "serviceAccount.name"
	keyEphemeral     = k8sPrefix + "ephemeral"
	keyPVCName       = k8sPrefix + "pvc/name"
	keyPVCNamespace  = k8sPrefix + "pvc/namespace"
	keyPVName        = k8sPrefix + "pv/name"

	// Secret keys of the fallback authentication methods.
	secretAPIKey          = "apiKey"
	secretAccessKeyID     = "accessKeyID"
	secretSecretAccessKey = "secretAccessKey"
)

const (
	provisionBucket = "bucket"
	provisionPrefix = "prefix"
)

// VolumeParams are the parsed volume attributes.
type VolumeParams struct {
	Bucket             string
	Prefix             string // without leading or trailing slash
	Endpoint           string
	Region             string
	IAMEndpoint        string // empty: the plugin's --iam-endpoint
	AuthType           volume.AuthType
	ProfileID          string
	ProfileName        string
	ProfileCRN         string
	LocationConstraint string
	ServiceInstanceID  string
	Provisioning       string

	// Set by Kubernetes.
	PodName, PodNamespace, PodUID, ServiceAccount string
	Ephemeral                                     bool
	PVCName, PVCNamespace, PVName                 string
}

var (
	locationRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	plainRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9:/._-]*$`)
)

func invalid(attr, format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "volume attribute %s: %s", attr, fmt.Sprintf(format, args...))
}

// parseVolumeParams parses and validates attributes. It checks each value's
// form and the combinations every caller needs; what is required depends on
// the caller (node or controller) and is checked there.
func parseVolumeParams(attrs map[string]string) (VolumeParams, error) {
	p := VolumeParams{AuthType: volume.AuthTrustedProfile}
	for k, v := range attrs {
		var err error
		if !strings.HasPrefix(k, k8sPrefix) && !strings.HasPrefix(k, k8sStoragePrefix) {
			if err := checkTemplate(k, v); err != nil {
				return VolumeParams{}, err
			}
		}
		switch k {
		case attrBucket:
			if e := volume.CheckBucket(v); e != nil {
				err = invalid(k, "%v", e)
			}
			p.Bucket = v
		case attrPrefix:
			p.Prefix, err = cleanPrefix(v)
		case attrEndpoint:
			if e := volume.CheckURL(v); e != nil {
				err = invalid(k, "%v", e)
			}
			p.Endpoint = strings.TrimRight(v, "/")
		case attrRegion:
			if e := volume.CheckRegion(v); e != nil {
				err = invalid(k, "%v", e)
			}
			p.Region = v
		case attrIAMEndpoint:
			if e := volume.CheckURL(v); e != nil {
				err = invalid(k, "%v", e)
			}
			p.IAMEndpoint = v
		case attrAuthType:
			a, e := volume.ParseAuthType(v)
			if e != nil {
				err = invalid(k, "%v", e)
			}
			p.AuthType = a
		case attrProfileID, attrProfileName, attrProfileCRN:
			if strings.TrimSpace(v) == "" || strings.ContainsAny(v, ",\n") {
				err = invalid(k, "%q is empty or contains a comma or newline", v)
			}
			switch k {
			case attrProfileID:
				p.ProfileID = v
			case attrProfileName:
				p.ProfileName = v
			default:
				p.ProfileCRN = v
			}
		case attrLocationConstraint:
			if !locationRE.MatchString(v) {
				err = invalid(k, "%q is not a location constraint such as us-south-smart", v)
			}
			p.LocationConstraint = v
		case attrServiceInstanceID:
			if !plainRE.MatchString(v) {
				err = invalid(k, "%q is not a service instance ID or CRN", v)
			}
			p.ServiceInstanceID = v
		case attrProvisioning:
			if v != provisionBucket && v != provisionPrefix {
				err = invalid(k, "%q must be bucket or prefix", v)
			}
			p.Provisioning = v
		case keyPodName:
			p.PodName = v
		case keyPodNamespace:
			p.PodNamespace = v
		case keyPodUID:
			p.PodUID = v
		case keySAName:
			p.ServiceAccount = v
		case keyEphemeral:
			b, e := strconv.ParseBool(v)
			if e != nil {
				err = invalid(k, "%q is not a boolean", v)
			}
			p.Ephemeral = b
		case keyPVCName:
			p.PVCName = v
		case keyPVCNamespace:
			p.PVCNamespace = v
		case keyPVName:
			p.PVName = v
		default:
			// Kubernetes adds attributes of its own: csi.storage.k8s.io/* (pod
			// info, tokens) and storage.kubernetes.io/* (csi-provisioner puts
			// storage.kubernetes.io/csiProvisionerIdentity on every PV it creates).
			if !strings.HasPrefix(k, k8sPrefix) && !strings.HasPrefix(k, k8sStoragePrefix) {
				err = status.Errorf(codes.InvalidArgument, "unknown volume attribute %q", k)
			}
		}
		if err != nil {
			return VolumeParams{}, err
		}
	}
	n := 0
	for _, v := range []string{p.ProfileID, p.ProfileName, p.ProfileCRN} {
		if v != "" {
			n++
		}
	}
	switch {
	case n > 1:
		return VolumeParams{}, invalid(attrProfileID, "give only one of trustedProfileID, trustedProfileName and trustedProfileCRN")
	case p.AuthType == volume.AuthTrustedProfile && n == 0:
		return VolumeParams{}, invalid(attrProfileID, "authType trustedProfile needs one of trustedProfileID, trustedProfileName or trustedProfileCRN")
	case p.AuthType != volume.AuthTrustedProfile && n > 0:
		return VolumeParams{}, invalid(attrAuthType, "%s does not use a trusted profile", p.AuthType)
	}
	return p, nil
}

// cleanPrefix normalizes a key prefix (see volume.CleanPrefix) and names
// the attribute when it is refused.
func cleanPrefix(v string) (string, error) {
	p, err := volume.CleanPrefix(v)
	if err != nil {
		return "", invalid(attrPrefix, "%v", err)
	}
	return p, nil
}

// nodeAttributes renders p as the volume context a node needs, so that
// CreateVolume's answer carries everything NodePublishVolume parses.
func (p VolumeParams) nodeAttributes() map[string]string {
	m := map[string]string{attrBucket: p.Bucket, attrEndpoint: p.Endpoint, attrAuthType: string(p.AuthType)}
	for k, v := range map[string]string{
		attrPrefix: p.Prefix, attrRegion: p.Region, attrIAMEndpoint: p.IAMEndpoint,
		attrProfileID: p.ProfileID, attrProfileName: p.ProfileName, attrProfileCRN: p.ProfileCRN,
		attrServiceInstanceID: p.ServiceInstanceID,
	} {
		if v != "" {
			m[k] = v
		}
	}
	return m
}

// paramsFingerprint identifies a CreateVolume request's parameters (without
// the Kubernetes-added ones) and capacity, for idempotency checks.
func paramsFingerprint(attrs map[string]string, capacity int64) string {
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		if !strings.HasPrefix(k, k8sPrefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%s\x00", k, attrs[k])
	}
	fmt.Fprintf(h, "capacity=%d", capacity)
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// parseMountFlags parses the capability's mount flags (a PV's or
// StorageClass's mountOptions) with the one mount-option grammar: each flag
// is "name=value", "name" or a comma-separated list of them; only
// volume-scope options are allowed (a temp_dir on the node, for instance,
// is the admin's). A refused flag is InvalidArgument naming it.
func parseMountFlags(flags []string) (volume.Options, error) {
	o := volume.DefaultOptions()
	for _, f := range flags {
		if err := o.Apply(f, volume.ScopeVolume); err != nil {
			return volume.Options{}, status.Errorf(codes.InvalidArgument, "PersistentVolume/StorageClass %v", err)
		}
	}
	if err := o.Validate(); err != nil {
		return volume.Options{}, status.Errorf(codes.InvalidArgument, "PersistentVolume/StorageClass %v", err)
	}
	return o, nil
}
