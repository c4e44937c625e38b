package satoken

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
)

// JWK is one public JSON Web Key (RFC 7517), RSA or EC.
type JWK struct {
	KTY string `json:"kty"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
	KID string `json:"kid,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
}

// PublicKey is a parsed JWK.
type PublicKey struct {
	KID string
	Alg string // may be empty: the JWK did not say
	Key crypto.PublicKey
}

func publicJWK(kid, alg string, pub crypto.PublicKey) JWK {
	enc := base64.RawURLEncoding.EncodeToString
	switch p := pub.(type) {
	case *rsa.PublicKey:
		return JWK{KTY: "RSA", Use: "sig", Alg: alg, KID: kid, N: enc(p.N.Bytes()), E: enc(big.NewInt(int64(p.E)).Bytes())}
	case *ecdsa.PublicKey:
		size := (p.Curve.Params().BitSize + 7) / 8
		x, y := make([]byte, size), make([]byte, size)
		p.X.FillBytes(x)
		p.Y.FillBytes(y)
		return JWK{KTY: "EC", Use: "sig", Alg: alg, KID: kid, Crv: p.Curve.Params().Name, X: enc(x), Y: enc(y)}
	}
	// newKey admits only the two types above.
	panic(fmt.Sprintf("satoken: unsupported public key type %T", pub))
}

// MarshalJWKS writes keys as a JSON Web Key Set document {"keys":[...]}.
func MarshalJWKS(keys ...JWK) []byte {
	if keys == nil {
		keys = []JWK{}
	}
	b, err := json.Marshal(struct {
		Keys []JWK `json:"keys"`
	}{keys})
	if err != nil {
		// A struct of strings always marshals.
		panic(err)
	}
	return b
}

// ParseJWKS reads a JSON Web Key Set. Keys that are not signature keys of a
// supported type (RSA, EC P-256/P-384/P-521) are skipped, as verifiers do;
// malformed supported keys are an error.
func ParseJWKS(data []byte) ([]PublicKey, error) {
	var doc struct {
		Keys []JWK `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("satoken: JWKS: %w", err)
	}
	if doc.Keys == nil {
		return nil, errors.New(`satoken: JWKS: no "keys" member`)
	}
	var out []PublicKey
	for i, k := range doc.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		var pub crypto.PublicKey
		var err error
		switch k.KTY {
		case "RSA":
			pub, err = parseRSA(k)
		case "EC":
			pub, err = parseEC(k)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("satoken: JWKS key %d (kid %q): %w", i, k.KID, err)
		}
		out = append(out, PublicKey{KID: k.KID, Alg: k.Alg, Key: pub})
	}
	return out, nil
}

func b64(s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		return nil, errors.New("bad base64url value")
	}
	return b, nil
}

func parseRSA(k JWK) (*rsa.PublicKey, error) {
	n, err := b64(k.N)
	if err != nil {
		return nil, fmt.Errorf("n: %w", err)
	}
	e, err := b64(k.E)
	if err != nil {
		return nil, fmt.Errorf("e: %w", err)
	}
	if len(e) > 4 {
		return nil, errors.New("e: too large")
	}
	ev := new(big.Int).SetBytes(e).Int64()
	if ev < 3 {
		return nil, errors.New("e: too small")
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(ev)}, nil
}

func parseEC(k JWK) (*ecdsa.PublicKey, error) {
	var curve elliptic.Curve
	switch k.Crv {
	case "P-256":
		curve = elliptic.P256()
	case "P-384":
		curve = elliptic.P384()
	case "P-521":
		curve = elliptic.P521()
	default:
		return nil, fmt.Errorf("unsupported curve %q", k.Crv)
	}
	x, err := b64(k.X)
	if err != nil {
		return nil, fmt.Errorf("x: %w", err)
	}
	y, err := b64(k.Y)
	if err != nil {
		return nil, fmt.Errorf("y: %w", err)
	}
	// Build the uncompressed point and let ecdh-backed parsing check it is on the curve.
	size := (curve.Params().BitSize + 7) / 8
	if len(x) > size || len(y) > size {
		return nil, errors.New("coordinates too long")
	}
	point := make([]byte, 1+2*size)
	point[0] = 4
	copy(point[1+size-len(x):1+size], x)
	copy(point[1+2*size-len(y):], y)
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
	if err != nil {
		return nil, fmt.Errorf("point: %w", err)
	}
	return pub, nil
}
