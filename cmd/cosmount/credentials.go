package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cosmount/cosmount/pkg/cos"
)

// Secrets reach cosmount only through files or the environment, never argv:
// a command line is visible to every user of the node through /proc.
const (
	envAPIKey          = "COSMOUNT_API_KEY"
	envHMACAccessKeyID = "COSMOUNT_HMAC_ACCESS_KEY_ID"
	envHMACSecret      = "COSMOUNT_HMAC_SECRET_ACCESS_KEY"
)

// readSecretFile reads a small secret file and trims surrounding whitespace.
// The error names the file and the problem but never the content.
func readSecretFile(what, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s %s: file is empty", what, path)
	}
	return s, nil
}

// authConfig is the one authentication method a mount uses.
type authConfig struct {
	profileID, profileName, profileCRN string
	crTokenFile                        string
	apiKey                             string // from the environment
	apiKeyFile                         string // re-read when replaced (key rotation)
	hmacID, hmacSecret                 string // from the environment
	hmacFile                           string // re-read when replaced (key rotation)
}

func (a *authConfig) method() string {
	switch {
	case a.crTokenFile != "":
		return "trusted profile"
	case a.apiKey != "" || a.apiKeyFile != "":
		return "API key"
	default:
		return "HMAC"
	}
}

// resolveAuth picks exactly one method from the flags and the environment.
func resolveAuth(f *mountFlags) (*authConfig, error) {
	a := &authConfig{profileID: f.profileID, profileName: f.profileName, profileCRN: f.profileCRN, crTokenFile: f.crTokenFile}
	profiles := 0
	for _, v := range []string{f.profileID, f.profileName, f.profileCRN} {
		if v != "" {
			profiles++
		}
	}
	if profiles > 1 {
		return nil, errors.New("give only one of --trusted-profile-id, --trusted-profile-name and --trusted-profile-crn")
	}
	if profiles == 1 && f.crTokenFile == "" {
		f.crTokenFile = defaultCRTokenFile(defaultCRTokenFiles)
		a.crTokenFile = f.crTokenFile
		if f.crTokenFile == "" {
			return nil, fmt.Errorf("a trusted profile needs a compute-resource token: give --cr-token-file (none of IBM's default token files %s can be read)", strings.Join(defaultCRTokenFiles, ", "))
		}
	}
	if (profiles == 1) != (f.crTokenFile != "") {
		return nil, errors.New("a trusted profile needs both --trusted-profile-id/-name/-crn and --cr-token-file")
	}
	methods := 0
	if profiles == 1 {
		methods++
		if _, err := os.Stat(f.crTokenFile); err != nil {
			return nil, fmt.Errorf("--cr-token-file: %w", err)
		}
	}
	envKey, _ := apiKeyFromEnv()
	switch {
	case f.apiKeyFile != "":
		// Checked now so that a wrong path fails the mount; the server
		// reads the file again at every exchange.
		if _, err := readSecretFile("--api-key-file", f.apiKeyFile); err != nil {
			return nil, err
		}
		a.apiKeyFile = f.apiKeyFile
		methods++
	case envKey != "":
		a.apiKey = envKey
		methods++
	}
	switch {
	case f.hmacFile != "":
		if _, err := cos.ReadHMACFile(f.hmacFile); err != nil {
			return nil, fmt.Errorf("--hmac-credentials-file: %w", err)
		}
		a.hmacFile = f.hmacFile
		methods++
	case os.Getenv(envHMACAccessKeyID) != "" || os.Getenv(envHMACSecret) != "":
		a.hmacID, a.hmacSecret = os.Getenv(envHMACAccessKeyID), os.Getenv(envHMACSecret)
		if a.hmacID == "" || a.hmacSecret == "" {
			return nil, fmt.Errorf("set both %s and %s", envHMACAccessKeyID, envHMACSecret)
		}
		methods++
	}
	switch methods {
	case 0:
		return nil, fmt.Errorf("no credentials: use --trusted-profile-id/--trusted-profile-name with --cr-token-file, --api-key-file (or %s or %s), or --hmac-credentials-file (or %s and %s)", envIBMCloudAPIKey, envAPIKey, envHMACAccessKeyID, envHMACSecret)
	case 1:
		return a, nil
	default:
		return nil, errors.New("more than one authentication method given: choose a trusted profile, an API key or HMAC credentials")
	}
}

// parseSource splits "BUCKET" or "BUCKET:/PREFIX" (or "BUCKET:PREFIX").
// The prefix is returned without a leading slash and with one trailing slash.
func parseSource(s string) (bucket, prefix string, err error) {
	bucket, prefix, _ = strings.Cut(s, ":")
	if bucket == "" {
		return "", "", fmt.Errorf("source %q: want BUCKET or BUCKET:/PREFIX", s)
	}
	if strings.ContainsAny(bucket, "/ ") {
		return "", "", fmt.Errorf("source %q: bucket name %q may not contain '/' or spaces", s, bucket)
	}
	prefix = strings.Trim(prefix, "/")
	if strings.Contains(prefix, "//") {
		return "", "", fmt.Errorf("source %q: prefix has an empty path element", s)
	}
	if prefix != "" {
		prefix += "/"
	}
	return bucket, prefix, nil
}
