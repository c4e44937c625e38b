// Package satoken owns Kubernetes-style signing keys and projected
// service-account tokens for the emulator, its tests and the demo: it
// generates and persists keys, publishes them as a JSON Web Key Set the way
// kube-apiserver does at /openid/v1/jwks, parses such sets, and mints tokens
// carrying exactly the claims kubelet's projected tokens carry.
//
// Nothing here logs or prints a key or a token.
package satoken

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Key is a private signing key with its key id.
type Key struct {
	// KID is the key id written into the JWT header and the JWKS. It is
	// derived from the public key, so a saved and reloaded key keeps it.
	KID    string
	signer crypto.Signer
	method jwt.SigningMethod
}

// GenerateKey makes a new RSA 2048 key (RS256), the kind kube-apiserver uses by default.
func GenerateKey() (*Key, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("satoken: generate RSA key: %w", err)
	}
	return newKey(k)
}

// GenerateECDSAKey makes a new ECDSA P-256 key (ES256).
func GenerateECDSAKey() (*Key, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("satoken: generate ECDSA key: %w", err)
	}
	return newKey(k)
}

// NewKey wraps an existing RSA (any size >= 2048) or ECDSA P-256 private key.
func NewKey(signer crypto.Signer) (*Key, error) { return newKey(signer) }

func newKey(signer crypto.Signer) (*Key, error) {
	var method jwt.SigningMethod
	switch k := signer.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("satoken: RSA key of %d bits is too small", k.N.BitLen())
		}
		method = jwt.SigningMethodRS256
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, errors.New("satoken: only the P-256 curve is supported")
		}
		method = jwt.SigningMethodES256
	default:
		return nil, fmt.Errorf("satoken: unsupported key type %T", signer)
	}
	der, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("satoken: marshal public key: %w", err)
	}
	// Like kube-apiserver: the kid is a digest of the public key, so it is
	// stable across restarts and different for every key.
	sum := sha256.Sum256(der)
	return &Key{KID: base64.RawURLEncoding.EncodeToString(sum[:]), signer: signer, method: method}, nil
}

// Algorithm is the JWS algorithm the key signs with ("RS256" or "ES256").
func (k *Key) Algorithm() string { return k.method.Alg() }

// Public returns the public key.
func (k *Key) Public() crypto.PublicKey { return k.signer.Public() }

// JWK returns the public key as a JSON Web Key.
func (k *Key) JWK() JWK { return publicJWK(k.KID, k.method.Alg(), k.signer.Public()) }

// JWKS returns the public key as a JSON Web Key Set document {"keys":[...]}.
func (k *Key) JWKS() []byte { return MarshalJWKS(k.JWK()) }

// Sign signs arbitrary claims with the key, setting the kid header. The
// emulator's IAM side signs its access tokens with it.
func (k *Key) Sign(claims jwt.Claims) (string, error) {
	t := jwt.NewWithClaims(k.method, claims)
	t.Header["kid"] = k.KID
	s, err := t.SignedString(k.signer)
	if err != nil {
		return "", fmt.Errorf("satoken: sign: %w", err)
	}
	return s, nil
}

// Save writes the private key as a PKCS#8 PEM file with mode 0600, replacing
// any previous file atomically.
func (k *Key) Save(path string) error {
	der, err := x509.MarshalPKCS8PrivateKey(k.signer)
	if err != nil {
		return fmt.Errorf("satoken: marshal private key: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("satoken: save key: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("satoken: save key: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("satoken: save key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("satoken: save key: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("satoken: save key: %w", err)
	}
	return nil
}

// Load reads a private key written by Save (or any PKCS#8, PKCS#1 or SEC 1 PEM key).
func Load(path string) (*Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("satoken: load key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("satoken: load key %s: no PEM block", path)
	}
	var parsed any
	switch block.Type {
	case "PRIVATE KEY":
		parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		parsed, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		parsed, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("satoken: load key %s: unsupported PEM block %q", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("satoken: load key %s: %w", path, err)
	}
	signer, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("satoken: load key %s: unsupported key type %T", path, parsed)
	}
	return newKey(signer)
}

// Claims describes one projected service-account token.
type Claims struct {
	Issuer            string
	Audience          []string
	Namespace         string
	ServiceAccount    string
	ServiceAccountUID string
	Pod, PodUID       string        // optional: tokens bound to a pod
	Node, NodeUID     string        // optional: tokens bound to a node
	IssuedAt          time.Time     // default: now
	Lifetime          time.Duration // exp = iat + Lifetime; default 1h
	NotBeforeOffset   time.Duration // nbf = iat + NotBeforeOffset (tests of nbf); default 0
	ID                string        // jti; random when empty
}

// Mint signs a token with the claims kubelet's projected tokens carry:
// iss, sub, aud, exp, iat, nbf, jti and the kubernetes.io object.
func (k *Key) Mint(c Claims) (string, error) {
	if c.Issuer == "" || len(c.Audience) == 0 || c.Namespace == "" || c.ServiceAccount == "" {
		return "", errors.New("satoken: issuer, audience, namespace and service account are required")
	}
	iat := c.IssuedAt
	if iat.IsZero() {
		iat = time.Now()
	}
	life := c.Lifetime
	if life == 0 {
		life = time.Hour
	}
	jti := c.ID
	if jti == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("satoken: jti: %w", err)
		}
		jti = hex.EncodeToString(b[:])
	}
	kube := map[string]any{
		"namespace":      c.Namespace,
		"serviceaccount": map[string]any{"name": c.ServiceAccount, "uid": c.ServiceAccountUID},
	}
	if c.Pod != "" {
		kube["pod"] = map[string]any{"name": c.Pod, "uid": c.PodUID}
	}
	if c.Node != "" {
		kube["node"] = map[string]any{"name": c.Node, "uid": c.NodeUID}
	}
	claims := jwt.MapClaims{
		"iss":           c.Issuer,
		"sub":           "system:serviceaccount:" + c.Namespace + ":" + c.ServiceAccount,
		"aud":           c.Audience,
		"iat":           iat.Unix(),
		"nbf":           iat.Add(c.NotBeforeOffset).Unix(),
		"exp":           iat.Add(life).Unix(),
		"jti":           jti,
		"kubernetes.io": kube,
	}
	return k.Sign(claims)
}
