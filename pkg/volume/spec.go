package volume

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
)

// Spec is everything that decides how one published volume is served on a
// node, except its secret: the node plugin builds it from a publish request,
// the mounter keeps it with the running server and compares it on every
// republish, and Args turns it into the server's command line. It is the
// encoding of a volume between plugin and server (JSON on the mounter API).
type Spec struct {
	VolumeID string `json:"volumeID"`
	// Target is where the volume is mounted (kubelet's target path).
	Target string `json:"target"`

	Bucket string `json:"bucket"`
	// Prefix is a key prefix without leading or trailing slash; empty is the
	// whole bucket.
	Prefix   string `json:"prefix,omitempty"`
	Endpoint string `json:"endpoint"`
	Region   string `json:"region,omitempty"`
	// IAMEndpoint is required for the trusted profile and API key methods.
	IAMEndpoint string `json:"iamEndpoint,omitempty"`

	Auth AuthType `json:"auth"`
	// Profile is set exactly for AuthTrustedProfile.
	Profile Profile `json:"profile,omitempty"`

	// Options are volume-scope mount options (see Scope); on the wire they
	// are their Encode form, parsed back with the same grammar.
	Options Options `json:"-"`
}

// specJSON is Spec on the wire.
type specJSON struct {
	specAlias
	Options string `json:"options,omitempty"`
}

type specAlias Spec

// MarshalJSON writes Options in their Encode form.
func (s Spec) MarshalJSON() ([]byte, error) {
	return json.Marshal(specJSON{specAlias: specAlias(s), Options: s.Options.Encode()})
}

// UnmarshalJSON parses the options with the one grammar; only volume-scope
// options may arrive this way (node resources are the mounter's own).
func (s *Spec) UnmarshalJSON(data []byte) error {
	var w specJSON
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	*s = Spec(w.specAlias)
	s.Options = DefaultOptions()
	return s.Options.Apply(w.Options, ScopeVolume)
}

var (
	bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	regionRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
)

// CheckBucket accepts a COS bucket name: 3-63 lower-case letters, digits,
// '-' and '.', starting and ending with a letter or digit.
func CheckBucket(b string) error {
	if !bucketRE.MatchString(b) || strings.Contains(b, "..") {
		return fmt.Errorf("%q is not a valid bucket name (3-63 lower-case letters, digits, '-' and '.')", b)
	}
	return nil
}

// CheckRegion accepts a region name such as us-south.
func CheckRegion(r string) error {
	if !regionRE.MatchString(r) {
		return fmt.Errorf("%q is not a region name", r)
	}
	return nil
}

// CleanPrefix normalizes a key prefix: no leading or trailing slash, no
// empty, "." or ".." segments (they would escape or alias other volumes),
// no control characters.
func CleanPrefix(v string) (string, error) {
	t := strings.Trim(v, "/")
	if t == "" {
		return "", nil
	}
	for _, seg := range strings.Split(t, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", fmt.Errorf("%q has an empty, '.' or '..' segment", v)
		}
	}
	if strings.IndexFunc(t, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return "", fmt.Errorf("%q contains a control character", v)
	}
	return t, nil
}

// CheckURL accepts an absolute http(s) URL with a host and without user
// info, query or fragment.
func CheckURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.User != nil {
		return errors.New("URL must not carry credentials")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL with a host", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q must not have a query or fragment", s)
	}
	return nil
}

// FieldError is a refused Spec field; Field is the name users know it by
// (the volume attribute).
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Validate checks every field, naming the first bad one. Options must have
// been through WithDefaults.
func (s *Spec) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case s.VolumeID == "":
		return bad("volumeID", "is required")
	case s.Target == "" || !filepath.IsAbs(s.Target) || filepath.Clean(s.Target) != s.Target:
		return bad("target", "%q must be a clean absolute path", s.Target)
	}
	if err := CheckBucket(s.Bucket); err != nil {
		return bad("bucketName", "%v", err)
	}
	if p, err := CleanPrefix(s.Prefix); err != nil {
		return bad("prefix", "%v", err)
	} else if p != s.Prefix {
		return bad("prefix", "%q is not in its clean form %q", s.Prefix, p)
	}
	if err := CheckURL(s.Endpoint); err != nil {
		return bad("cosEndpoint", "%v", err)
	}
	if s.Region != "" {
		if err := CheckRegion(s.Region); err != nil {
			return bad("region", "%v", err)
		}
	}
	switch s.Auth {
	case AuthTrustedProfile:
		if s.Profile.count() != 1 {
			return bad("trustedProfileID", "exactly one trusted profile ID, name or CRN is required")
		}
		for _, v := range []string{s.Profile.ID, s.Profile.Name, s.Profile.CRN} {
			if strings.ContainsAny(v, ",\n\r\x00") {
				return bad("trustedProfileID", "%q contains a comma, line break or NUL", v)
			}
		}
	case AuthAPIKey, AuthHMAC:
		if !s.Profile.IsZero() {
			return bad("authType", "%s does not use a trusted profile", s.Auth)
		}
	default:
		return bad("authType", "%q must be trustedProfile, apiKey or hmac", s.Auth)
	}
	if s.Auth.UsesIAM() {
		if s.IAMEndpoint == "" {
			return bad("iamEndpoint", "is required for authType %s", s.Auth)
		}
		if err := CheckURL(s.IAMEndpoint); err != nil {
			return bad("iamEndpoint", "%v", err)
		}
	}
	if s.Options.Prefix != "" || s.Options.TempDir != "" {
		return bad("options", "prefix and temp_dir are not volume options")
	}
	return s.Options.Validate()
}

// Equivalent reports whether s and o would start the same server: every
// field but the credentials, with options compared by value (so their
// order or an explicit default does not matter).
func (s *Spec) Equivalent(o *Spec) bool {
	a, b := *s, *o
	a.Options, b.Options = a.Options.WithDefaults(), b.Options.WithDefaults()
	return a == b
}

// Differences lists the fields in which o differs from s, for an error that
// says why a republish was refused.
func (s *Spec) Differences(o *Spec) []string {
	var out []string
	add := func(name string, differ bool) {
		if differ {
			out = append(out, name)
		}
	}
	add("volumeID", s.VolumeID != o.VolumeID)
	add("bucketName", s.Bucket != o.Bucket)
	add("prefix", s.Prefix != o.Prefix)
	add("cosEndpoint", s.Endpoint != o.Endpoint)
	add("region", s.Region != o.Region)
	add("iamEndpoint", s.IAMEndpoint != o.IAMEndpoint)
	add("authType", s.Auth != o.Auth)
	add("trustedProfile", s.Profile != o.Profile)
	add("mount options", s.Options.WithDefaults() != o.Options.WithDefaults())
	return out
}

// Source is the BUCKET[:/PREFIX] argument of `cosmount mount`.
func (s *Spec) Source() string {
	if s.Prefix == "" {
		return s.Bucket
	}
	return s.Bucket + ":/" + s.Prefix
}

// Args builds the server's command line: `cosmount mount` with flags, then
// nodeFlags (flags about the node's resources that the mounter adds, such
// as the control socket), the -o list (the volume's options plus
// nodeOptions, which may carry node-scope options such as temp_dir, and
// whose TempLimit is the node's maximum of a volume's temp_limit: a volume
// may ask for less, never for more or for none),
// the source and the target. credFile is the path of the credential file;
// secrets themselves never appear in argv, which every user of the node can
// read through /proc.
func (s *Spec) Args(credFile string, nodeOptions Options, nodeFlags ...string) []string {
	args := append([]string{"mount", "--foreground"}, s.accessFlags(credFile)...)
	args = append(args, nodeFlags...)
	opts := s.Options
	opts.TempDir = nodeOptions.TempDir
	// The node's maximum of temporary space; a volume may only lower it.
	if max := nodeOptions.TempLimit; max > 0 && (opts.TempLimit == 0 || opts.TempLimit > max) {
		opts.TempLimit = max
	}
	if enc := opts.Encode(); enc != "" {
		args = append(args, "-o", enc)
	}
	return append(args, s.Source(), s.Target)
}

// AbortUploadsArgs builds the command line of `cosmount abort-uploads`,
// which aborts the multipart uploads a server that ended without finishing
// them left listed in its journal.
func (s *Spec) AbortUploadsArgs(credFile, journal string) []string {
	args := append([]string{"abort-uploads"}, s.accessFlags(credFile)...)
	return append(args, "--upload-journal", journal, s.Source())
}

// accessFlags are the flags that say where the bucket is and how to
// authenticate, shared by every subcommand that talks to COS.
func (s *Spec) accessFlags(credFile string) []string {
	args := []string{"--endpoint", s.Endpoint}
	if s.Region != "" {
		args = append(args, "--region", s.Region)
	}
	if s.Auth.UsesIAM() {
		args = append(args, "--iam-endpoint", s.IAMEndpoint)
	}
	switch s.Auth {
	case AuthTrustedProfile:
		switch {
		case s.Profile.ID != "":
			args = append(args, "--trusted-profile-id", s.Profile.ID)
		case s.Profile.Name != "":
			args = append(args, "--trusted-profile-name", s.Profile.Name)
		default:
			args = append(args, "--trusted-profile-crn", s.Profile.CRN)
		}
		args = append(args, "--cr-token-file", credFile)
	case AuthAPIKey:
		args = append(args, "--api-key-file", credFile)
	case AuthHMAC:
		args = append(args, "--hmac-credentials-file", credFile)
	}
	return args
}
