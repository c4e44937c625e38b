package volume

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// AuthType selects how a server authenticates to COS.
type AuthType string

const (
	// AuthTrustedProfile exchanges the pod's compute-resource token through a trusted profile.
	AuthTrustedProfile AuthType = "trustedProfile"
	// AuthAPIKey exchanges an API key at IAM.
	AuthAPIKey AuthType = "apiKey"
	// AuthHMAC signs requests with HMAC (SigV4) keys.
	AuthHMAC AuthType = "hmac"
)

// ParseAuthType checks an authType attribute value.
func ParseAuthType(s string) (AuthType, error) {
	switch a := AuthType(s); a {
	case AuthTrustedProfile, AuthAPIKey, AuthHMAC:
		return a, nil
	}
	return "", fmt.Errorf("%q must be trustedProfile, apiKey or hmac", s)
}

// UsesIAM reports whether the method exchanges something at IAM.
func (a AuthType) UsesIAM() bool { return a == AuthTrustedProfile || a == AuthAPIKey }

// Profile names a trusted profile by exactly one of ID, name or CRN.
type Profile struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
	CRN  string `json:"crn,omitempty"`
}

// count is how many of the three are set.
func (p Profile) count() int {
	n := 0
	for _, v := range []string{p.ID, p.Name, p.CRN} {
		if v != "" {
			n++
		}
	}
	return n
}

// IsZero reports whether no profile is named.
func (p Profile) IsZero() bool { return p.count() == 0 }

func (p Profile) String() string {
	switch {
	case p.ID != "":
		return p.ID
	case p.Name != "":
		return "name " + p.Name
	case p.CRN != "":
		return p.CRN
	}
	return "(none)"
}

// Credentials are the secrets a volume's server reads from its credential
// file. Only the field matching the volume's AuthType is used. They are
// written to 0600 files and never placed on a command line or in a log.
type Credentials struct {
	CRToken         string `json:"crToken,omitempty"`         // AuthTrustedProfile: the pod's projected service-account token
	APIKey          string `json:"apiKey,omitempty"`          // AuthAPIKey
	AccessKeyID     string `json:"accessKeyID,omitempty"`     // AuthHMAC
	SecretAccessKey string `json:"secretAccessKey,omitempty"` // AuthHMAC
}

// String keeps credentials out of any log line that formats them by accident.
func (Credentials) String() string { return "Credentials{redacted}" }

// GoString covers %#v.
func (c Credentials) GoString() string { return c.String() }

// Validate checks that c holds what auth needs, without echoing any of it.
func (c Credentials) Validate(auth AuthType) error {
	switch auth {
	case AuthTrustedProfile:
		if strings.TrimSpace(c.CRToken) == "" {
			return errors.New("the compute-resource (pod) token is empty")
		}
	case AuthAPIKey:
		if strings.TrimSpace(c.APIKey) == "" {
			return errors.New("the API key is empty")
		}
		if strings.ContainsAny(strings.TrimSpace(c.APIKey), "\n\r") {
			return errors.New("the API key contains a line break")
		}
	case AuthHMAC:
		if c.AccessKeyID == "" || c.SecretAccessKey == "" {
			return errors.New("the HMAC access key ID and secret are both required")
		}
		if strings.ContainsAny(c.AccessKeyID, ":\n\r") || strings.ContainsAny(c.SecretAccessKey, "\n\r") {
			return errors.New("the HMAC access key ID must not contain ':' and neither key a line break")
		}
	default:
		return fmt.Errorf("unknown auth type %q", auth)
	}
	return nil
}

// CredentialFileName is the name of the per-volume file that holds the
// secret for auth, in the volume's state directory.
func CredentialFileName(auth AuthType) string {
	switch auth {
	case AuthAPIKey:
		return "apikey"
	case AuthHMAC:
		return "hmac"
	default:
		return "token"
	}
}

// CredentialFileContent renders c in the format the server reads for auth:
// the raw token, the raw API key, or ACCESS_KEY_ID:SECRET (pkg/cos
// ReadHMACFile).
func CredentialFileContent(auth AuthType, c Credentials) []byte {
	switch auth {
	case AuthAPIKey:
		return []byte(strings.TrimSpace(c.APIKey))
	case AuthHMAC:
		return []byte(c.AccessKeyID + ":" + c.SecretAccessKey + "\n")
	default:
		return []byte(c.CRToken)
	}
}

// Digest identifies c's content for auth without revealing it: two
// publishes with the same digest carry the same secret, so a republish with
// an unchanged token needs no IAM call and no file write.
func (c Credentials) Digest(auth AuthType) string {
	sum := sha256.Sum256(append([]byte(string(auth)+"\x00"), CredentialFileContent(auth, c)...))
	return hex.EncodeToString(sum[:])
}
