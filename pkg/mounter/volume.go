package mounter

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// AuthType selects how a cosmount server authenticates to COS.
type AuthType string

const (
	// AuthTrustedProfile exchanges the pod's compute-resource token through a trusted profile.
	AuthTrustedProfile AuthType = "trustedProfile"
	// AuthAPIKey exchanges an API key at IAM.
	AuthAPIKey AuthType = "apiKey"
	// AuthHMAC signs requests with HMAC (SigV4) keys.
	AuthHMAC AuthType = "hmac"
)

// Credentials are the secrets a volume's server reads from its state
// directory. Only the field matching the volume's AuthType is used. They are
// written to 0600 files and never placed on a command line or in a log.
type Credentials struct {
	CRToken         string // AuthTrustedProfile: the pod's projected service-account token
	APIKey          string // AuthAPIKey
	AccessKeyID     string // AuthHMAC
	SecretAccessKey string // AuthHMAC
}

// String keeps credentials out of any log line that formats a Volume or
// Credentials value by accident.
func (Credentials) String() string { return "Credentials{redacted}" }

// GoString covers %#v.
func (c Credentials) GoString() string { return c.String() }

// Volume is everything needed to start the cosmount server for one target.
type Volume struct {
	VolumeID string
	Target   string

	Bucket   string
	Prefix   string // optional, without leading or trailing slash
	Endpoint string
	Region   string // optional
	// IAMEndpoint is required for the trusted profile and API key methods.
	IAMEndpoint string

	Auth        AuthType
	ProfileID   string // exactly one of the three for AuthTrustedProfile
	ProfileName string
	ProfileCRN  string

	// Options are cosmount -o values such as "uid=1000", "ro", "allow_other".
	Options []string

	Credentials Credentials
}

// Validate checks what the mounter itself depends on; the driver validates
// user input with better messages before it gets here.
func (v *Volume) Validate() error {
	switch {
	case v.Target == "" || !filepath.IsAbs(v.Target):
		return fmt.Errorf("target %q must be an absolute path", v.Target)
	case v.Bucket == "":
		return errors.New("bucket is required")
	case v.Endpoint == "":
		return errors.New("endpoint is required")
	}
	for _, o := range v.Options {
		if o == "" || strings.Contains(o, ",") {
			return fmt.Errorf("mount option %q is empty or contains a comma", o)
		}
	}
	switch v.Auth {
	case AuthTrustedProfile:
		n := 0
		for _, p := range []string{v.ProfileID, v.ProfileName, v.ProfileCRN} {
			if p != "" {
				n++
			}
		}
		if n != 1 {
			return errors.New("exactly one trusted profile ID, name or CRN is required")
		}
		if v.IAMEndpoint == "" {
			return errors.New("IAM endpoint is required")
		}
	case AuthAPIKey:
		if v.IAMEndpoint == "" {
			return errors.New("IAM endpoint is required")
		}
	case AuthHMAC:
	default:
		return fmt.Errorf("unknown auth type %q", v.Auth)
	}
	return validateCredentials(v.Auth, v.Credentials)
}

func validateCredentials(auth AuthType, c Credentials) error {
	switch auth {
	case AuthTrustedProfile:
		if strings.TrimSpace(c.CRToken) == "" {
			return errors.New("compute-resource token is empty")
		}
	case AuthAPIKey:
		if strings.TrimSpace(c.APIKey) == "" {
			return errors.New("API key is empty")
		}
	case AuthHMAC:
		if c.AccessKeyID == "" || c.SecretAccessKey == "" {
			return errors.New("HMAC access key ID and secret are required")
		}
		if strings.ContainsAny(c.AccessKeyID, ":\n") || strings.ContainsAny(c.SecretAccessKey, "\n") {
			return errors.New("HMAC access key ID must not contain ':' or a newline")
		}
	}
	return nil
}

// credentialFileName is the per-volume file that holds the secret for auth.
func credentialFileName(auth AuthType) string {
	switch auth {
	case AuthAPIKey:
		return "apikey"
	case AuthHMAC:
		return "hmac"
	default:
		return "token"
	}
}

// credentialFileContent renders c in the format cosmount reads for auth.
func credentialFileContent(auth AuthType, c Credentials) []byte {
	switch auth {
	case AuthAPIKey:
		return []byte(c.APIKey)
	case AuthHMAC:
		return []byte(c.AccessKeyID + ":" + c.SecretAccessKey + "\n")
	default:
		return []byte(c.CRToken)
	}
}

// Args builds the cosmount command line. credFile is the path of the
// credential file in the volume's state directory; secrets themselves never
// appear in argv because /proc/<pid>/cmdline is world-readable.
func (v *Volume) Args(credFile string) []string {
	args := []string{"mount", "--foreground", "--endpoint", v.Endpoint}
	if v.Region != "" {
		args = append(args, "--region", v.Region)
	}
	if v.Auth != AuthHMAC {
		args = append(args, "--iam-endpoint", v.IAMEndpoint)
	}
	switch v.Auth {
	case AuthTrustedProfile:
		switch {
		case v.ProfileID != "":
			args = append(args, "--trusted-profile-id", v.ProfileID)
		case v.ProfileName != "":
			args = append(args, "--trusted-profile-name", v.ProfileName)
		default:
			args = append(args, "--trusted-profile-crn", v.ProfileCRN)
		}
		args = append(args, "--cr-token-file", credFile)
	case AuthAPIKey:
		args = append(args, "--api-key-file", credFile)
	case AuthHMAC:
		args = append(args, "--hmac-credentials-file", credFile)
	}
	if len(v.Options) > 0 {
		args = append(args, "-o", strings.Join(v.Options, ","))
	}
	source := v.Bucket
	if v.Prefix != "" {
		source += ":/" + strings.Trim(v.Prefix, "/")
	}
	return append(args, source, filepath.Clean(v.Target))
}

// withMetricsSocket returns args (built by Volume.Args) with the server told
// to serve its metrics on sock. The flag goes right after the subcommand,
// before the positional arguments where flag parsing stops.
func withMetricsSocket(args []string, sock string) []string {
	out := make([]string, 0, len(args)+2)
	out = append(out, args[0], "--metrics-socket", sock)
	return append(out, args[1:]...)
}

// argsHash identifies a command line; two publishes with the same hash serve
// the same bucket the same way.
func argsHash(args []string) string {
	h := sha256.New()
	for _, a := range args {
		h.Write([]byte(a))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}
