package cos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/internal/filestamp"
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
	h, err := ParseHMAC(b)
	if err != nil {
		return HMAC{}, fmt.Errorf("HMAC credentials file %s: %w", path, err)
	}
	return h, nil
}

// ParseHMAC's errors, fixed texts that never quote the content.
var (
	errHMACFormat = errors.New("want ACCESS_KEY_ID:SECRET_ACCESS_KEY on one line, or the two values on two lines")
	errHMACEmpty  = errors.New("access key id or secret is empty")
)

// ParseHMAC reads the content of an HMAC credentials file (see
// ReadHMACFile). Errors never quote the content.
func ParseHMAC(b []byte) (HMAC, error) {
	var id, secret string
	fields := strings.Fields(string(b))
	switch {
	case len(fields) == 1 && strings.Count(fields[0], ":") == 1:
		id, secret, _ = strings.Cut(fields[0], ":")
	case len(fields) == 2 && !strings.Contains(fields[0], ":"):
		id, secret = fields[0], fields[1]
	default:
		return HMAC{}, errHMACFormat
	}
	if id == "" || secret == "" {
		return HMAC{}, errHMACEmpty
	}
	return HMAC{AccessKeyID: id, SecretAccessKey: secret}, nil
}

// hmacFileProvider is an aws.CredentialsProvider over an HMAC credentials
// file that the node plugin replaces when the credentials are rotated. The
// SDK asks for credentials at every attempt; the file is stat'ed each time
// and read again only when it changed, so the request after a replacement
// is signed with the new key.
type hmacFileProvider struct {
	path string

	mu    sync.Mutex
	stamp filestamp.Stamp // guarded by mu: of the file cur was read from
	cur   HMAC            // guarded by mu
}

// newHMACFileProvider reads the file once, so that a missing or malformed
// file is an error at start.
func newHMACFileProvider(path string) (*hmacFileProvider, error) {
	p := &hmacFileProvider{path: path}
	if _, err := p.credentials(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *hmacFileProvider) credentials() (HMAC, error) {
	st, err := filestamp.Of(p.path)
	if err != nil {
		return HMAC{}, fmt.Errorf("HMAC credentials: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if st == p.stamp && p.cur.AccessKeyID != "" {
		return p.cur, nil
	}
	h, err := ReadHMACFile(p.path)
	if err != nil {
		return HMAC{}, err
	}
	if p.cur.AccessKeyID != "" && h != p.cur {
		klog.InfoS("HMAC credentials file changed: signing with the new key from now on", "file", p.path, "accessKeyID", h.AccessKeyID)
	}
	p.stamp, p.cur = st, h
	return h, nil
}

// Retrieve implements aws.CredentialsProvider. A failure is a credential
// error (ErrNoCredentials once mapped), never sent to COS.
func (p *hmacFileProvider) Retrieve(context.Context) (aws.Credentials, error) {
	h, err := p.credentials()
	if err != nil {
		return aws.Credentials{}, &tokenError{what: "get HMAC credentials", err: err}
	}
	return aws.Credentials{AccessKeyID: h.AccessKeyID, SecretAccessKey: h.SecretAccessKey, Source: "cosmount HMAC file"}, nil
}
