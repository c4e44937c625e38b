package driver

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cosmount/cosmount/pkg/mounter"
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
	AuthType           mounter.AuthType
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
	bucketRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	regionRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
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
	p := VolumeParams{AuthType: mounter.AuthTrustedProfile}
	for k, v := range attrs {
		var err error
		switch k {
		case attrBucket:
			if !bucketRE.MatchString(v) || strings.Contains(v, "..") {
				err = invalid(k, "%q is not a valid bucket name (3-63 lower-case letters, digits, '-' and '.')", v)
			}
			p.Bucket = v
		case attrPrefix:
			p.Prefix, err = cleanPrefix(v)
		case attrEndpoint:
			if e := checkURL(v); e != nil {
				err = invalid(k, "%v", e)
			}
			p.Endpoint = strings.TrimRight(v, "/")
		case attrRegion:
			if !regionRE.MatchString(v) {
				err = invalid(k, "%q is not a region name", v)
			}
			p.Region = v
		case attrIAMEndpoint:
			if e := checkURL(v); e != nil {
				err = invalid(k, "%v", e)
			}
			p.IAMEndpoint = v
		case attrAuthType:
			switch a := mounter.AuthType(v); a {
			case mounter.AuthTrustedProfile, mounter.AuthAPIKey, mounter.AuthHMAC:
				p.AuthType = a
			default:
				err = invalid(k, "%q must be trustedProfile, apiKey or hmac", v)
			}
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
	case p.AuthType == mounter.AuthTrustedProfile && n == 0:
		return VolumeParams{}, invalid(attrProfileID, "authType trustedProfile needs one of trustedProfileID, trustedProfileName or trustedProfileCRN")
	case p.AuthType != mounter.AuthTrustedProfile && n > 0:
		return VolumeParams{}, invalid(attrAuthType, "%s does not use a trusted profile", p.AuthType)
	}
	return p, nil
}

// cleanPrefix normalizes a key prefix: no leading or trailing slash, no
// empty, "." or ".." segments (they would escape or alias other volumes).
func cleanPrefix(v string) (string, error) {
	t := strings.Trim(v, "/")
	if t == "" {
		return "", nil
	}
	for _, seg := range strings.Split(t, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", invalid(attrPrefix, "%q has an empty, '.' or '..' segment", v)
		}
	}
	if strings.ContainsAny(t, "\x00\n\r") {
		return "", invalid(attrPrefix, "%q contains a control character", v)
	}
	return t, nil
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

// mountOptionSpec says how a mount flag's value is checked. Only options
// that are safe for a pod's author to choose are passed to cosmount: a
// temp_dir on the node, for instance, is not.
var mountOptionSpec = map[string]func(string) error{
	"uid":                 checkUint32,
	"gid":                 checkUint32,
	"file_mode":           checkMode,
	"dir_mode":            checkMode,
	"attr_ttl":            checkDuration,
	"entry_ttl":           checkDuration,
	"negative_ttl":        checkDuration,
	"upload_concurrency":  checkPositiveInt,
	"part_size":           checkSize,
	"memory_limit":        checkSize,
	"multipart_threshold": checkSize,
	"readahead_max":       checkSize,
}

var sizeRE = regexp.MustCompile(`^[0-9]+(B|[KMGT]i?B?|[kKMG]B|k)?$`)

func checkUint32(v string) error {
	_, err := strconv.ParseUint(v, 10, 32)
	return err
}

func checkMode(v string) error {
	n, err := strconv.ParseUint(v, 8, 32)
	if err == nil && n&^0o777 != 0 {
		return fmt.Errorf("only permission bits are allowed")
	}
	return err
}

func checkDuration(v string) error {
	d, err := time.ParseDuration(v)
	if err == nil && d < 0 {
		return fmt.Errorf("negative")
	}
	return err
}

func checkPositiveInt(v string) error {
	n, err := strconv.Atoi(v)
	if err == nil && n <= 0 {
		return fmt.Errorf("must be positive")
	}
	return err
}

func checkSize(v string) error {
	if !sizeRE.MatchString(v) {
		return fmt.Errorf("not a size such as 16MiB")
	}
	return nil
}

// mountOptions holds the parsed mount flags of a volume capability.
type mountOptions struct {
	values   map[string]string // name -> value for options with a value
	readOnly bool
}

// parseMountFlags accepts the capability's mount flags, each "name=value",
// "name" or a comma-separated list of them; '-' and '_' are interchangeable
// in names (file-mode = file_mode).
func parseMountFlags(flags []string) (mountOptions, error) {
	o := mountOptions{values: map[string]string{}}
	for _, f := range flags {
		for _, item := range strings.Split(f, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			name, val, hasVal := strings.Cut(item, "=")
			name = strings.ReplaceAll(name, "-", "_")
			switch {
			case !hasVal && name == "ro":
				o.readOnly = true
			case !hasVal && (name == "rw" || name == "allow_other"):
				// allow_other is always set (pods run as arbitrary users); rw is the default.
			case hasVal && mountOptionSpec[name] != nil:
				if err := mountOptionSpec[name](val); err != nil {
					return mountOptions{}, status.Errorf(codes.InvalidArgument, "mount flag %s=%q: %v", name, val, err)
				}
				o.values[name] = val
			default:
				return mountOptions{}, status.Errorf(codes.InvalidArgument, "unknown mount flag %q", item)
			}
		}
	}
	return o, nil
}
