package cos

import (
	"fmt"
	"os"
	"strings"
)

// ReadHMACFile reads HMAC credentials from a file holding
// "ACCESS_KEY_ID:SECRET_ACCESS_KEY" on one line (the s3fs passwd-file form,
// which is also what pkg/mounter writes) or the two values on two lines.
// Errors name the file and the problem, never its content.
func ReadHMACFile(path string) (HMAC, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return HMAC{}, fmt.Errorf("HMAC credentials: %w", err)
	}
	var id, secret string
	fields := strings.Fields(string(b))
	switch {
	case len(fields) == 1 && strings.Count(fields[0], ":") == 1:
		id, secret, _ = strings.Cut(fields[0], ":")
	case len(fields) == 2 && !strings.Contains(fields[0], ":"):
		id, secret = fields[0], fields[1]
	default:
		return HMAC{}, fmt.Errorf("HMAC credentials file %s: want ACCESS_KEY_ID:SECRET_ACCESS_KEY on one line, or the two values on two lines", path)
	}
	if id == "" || secret == "" {
		return HMAC{}, fmt.Errorf("HMAC credentials file %s: access key id or secret is empty", path)
	}
	return HMAC{AccessKeyID: id, SecretAccessKey: secret}, nil
}
