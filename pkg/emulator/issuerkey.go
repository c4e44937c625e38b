package emulator

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cosmount/cosmount/pkg/emulator/satoken"
)

// The built-in issuer's files in the data directory.
const (
	issuerDir      = "issuer"
	issuerKeyName  = "key.pem"
	issuerJWKSName = "jwks.json"
)

// IssuerKeyFile is the built-in issuer's private key (PEM) in dataDir.
func IssuerKeyFile(dataDir string) string { return filepath.Join(dataDir, issuerDir, issuerKeyName) }

// IssuerJWKSFile is the built-in issuer's public key set in dataDir.
func IssuerJWKSFile(dataDir string) string { return filepath.Join(dataDir, issuerDir, issuerJWKSName) }

// KeyFileName and JWKSFileName are the names WriteIssuerKey uses in its directory.
const (
	KeyFileName  = issuerKeyName
	JWKSFileName = issuerJWKSName
)

// EnsureIssuerKey loads the built-in issuer key from dataDir, generating it
// (with its JWKS) on first use.
func EnsureIssuerKey(dataDir string) (*satoken.Key, error) {
	dir := filepath.Join(dataDir, issuerDir)
	k, err := satoken.Load(IssuerKeyFile(dataDir))
	if err == nil {
		// Rewrite the JWKS in case it was lost; it is derived from the key.
		if err := writeJWKS(dir, k); err != nil {
			return nil, err
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("emulator: issuer key: %w", err)
	}
	return WriteIssuerKey(dir)
}

// WriteIssuerKey generates a new issuer key into dir: key.pem (mode 0600) and
// jwks.json, replacing any previous ones.
func WriteIssuerKey(dir string) (*satoken.Key, error) {
	k, err := satoken.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("emulator: issuer key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("emulator: issuer key: %w", err)
	}
	if err := k.Save(filepath.Join(dir, issuerKeyName)); err != nil {
		return nil, fmt.Errorf("emulator: issuer key: %w", err)
	}
	if err := writeJWKS(dir, k); err != nil {
		return nil, err
	}
	return k, nil
}

func writeJWKS(dir string, k *satoken.Key) error {
	if err := writeFileAtomic(filepath.Join(dir, issuerJWKSName), k.JWKS(), 0o644); err != nil {
		return fmt.Errorf("emulator: issuer jwks: %w", err)
	}
	return nil
}

// writeFileAtomic replaces path by data so that a concurrent reader never
// sees a half-written file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp, mode)); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}
