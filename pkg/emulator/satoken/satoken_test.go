package satoken

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestMintClaims(t *testing.T) {
	iat := time.Unix(1_800_000_000, 0)
	tests := []struct {
		name   string
		gen    func() (*Key, error)
		claims Claims
		want   map[string]any
	}{
		{
			name: "rsa pod-bound",
			gen:  GenerateKey,
			claims: Claims{Issuer: "https://kubernetes.default.svc", Audience: []string{"iam"}, Namespace: "ns1",
				ServiceAccount: "sa1", ServiceAccountUID: "sa-uid", Pod: "pod1", PodUID: "pod-uid", Node: "node1",
				NodeUID: "node-uid", IssuedAt: iat, Lifetime: 10 * time.Minute, ID: "jti-1"},
			want: map[string]any{
				"iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:ns1:sa1", "aud": []any{"iam"},
				"iat": float64(iat.Unix()), "nbf": float64(iat.Unix()), "exp": float64(iat.Unix() + 600), "jti": "jti-1",
				"kubernetes.io": map[string]any{
					"namespace":      "ns1",
					"serviceaccount": map[string]any{"name": "sa1", "uid": "sa-uid"},
					"pod":            map[string]any{"name": "pod1", "uid": "pod-uid"},
					"node":           map[string]any{"name": "node1", "uid": "node-uid"},
				},
			},
		},
		{
			name: "ecdsa without pod, default lifetime",
			gen:  GenerateECDSAKey,
			claims: Claims{Issuer: "iss", Audience: []string{"iam", "other"}, Namespace: "ns", ServiceAccount: "sa",
				IssuedAt: iat, ID: "j"},
			want: map[string]any{
				"iss": "iss", "sub": "system:serviceaccount:ns:sa", "aud": []any{"iam", "other"},
				"iat": float64(iat.Unix()), "nbf": float64(iat.Unix()), "exp": float64(iat.Unix() + 3600), "jti": "j",
				"kubernetes.io": map[string]any{
					"namespace":      "ns",
					"serviceaccount": map[string]any{"name": "sa", "uid": ""},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := tt.gen()
			if err != nil {
				t.Fatal(err)
			}
			raw, err := k.Mint(tt.claims)
			if err != nil {
				t.Fatal(err)
			}
			// Verify with the published JWKS, as a relying party would.
			pubs, err := ParseJWKS(k.JWKS())
			if err != nil || len(pubs) != 1 || pubs[0].KID != k.KID || pubs[0].Alg != k.Algorithm() {
				t.Fatalf("ParseJWKS = %+v, %v", pubs, err)
			}
			tok, err := jwt.Parse(raw, func(tok *jwt.Token) (any, error) { return pubs[0].Key, nil },
				jwt.WithTimeFunc(func() time.Time { return iat.Add(time.Second) }))
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if tok.Header["kid"] != k.KID || tok.Header["alg"] != k.Algorithm() {
				t.Errorf("header = %v", tok.Header)
			}
			payload, err := jwt.NewParser().DecodeSegment(strings.Split(raw, ".")[1])
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(payload, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("claims =\n%v\nwant\n%v", got, tt.want)
			}
		})
	}
}

func TestMintRandomJTIAndRequiredFields(t *testing.T) {
	k, err := GenerateECDSAKey()
	if err != nil {
		t.Fatal(err)
	}
	c := Claims{Issuer: "i", Audience: []string{"iam"}, Namespace: "n", ServiceAccount: "s"}
	a, err := k.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	ja, jb := jtiOf(t, a), jtiOf(t, b)
	if ja == "" || ja == jb {
		t.Errorf("jti not random: %q %q", ja, jb)
	}
	for _, bad := range []Claims{
		{Audience: []string{"iam"}, Namespace: "n", ServiceAccount: "s"},
		{Issuer: "i", Namespace: "n", ServiceAccount: "s"},
		{Issuer: "i", Audience: []string{"iam"}, ServiceAccount: "s"},
		{Issuer: "i", Audience: []string{"iam"}, Namespace: "n"},
	} {
		if _, err := k.Mint(bad); err == nil {
			t.Errorf("Mint(%+v) succeeded", bad)
		}
	}
}

func jtiOf(t *testing.T, raw string) string {
	t.Helper()
	c := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(raw, c); err != nil {
		t.Fatal(err)
	}
	s, _ := c["jti"].(string)
	return s
}

func TestSaveLoad(t *testing.T) {
	for _, gen := range []func() (*Key, error){GenerateKey, GenerateECDSAKey} {
		k, err := gen()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "key.pem")
		if err := k.Save(path); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("mode = %v, want 0600", st.Mode().Perm())
		}
		l, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if l.KID != k.KID || l.Algorithm() != k.Algorithm() || string(l.JWKS()) != string(k.JWKS()) {
			t.Errorf("reloaded key differs: kid %s vs %s", l.KID, k.KID)
		}
		// A token minted by the reloaded key verifies with the original's JWKS.
		raw, err := l.Mint(Claims{Issuer: "i", Audience: []string{"iam"}, Namespace: "n", ServiceAccount: "s"})
		if err != nil {
			t.Fatal(err)
		}
		pubs, err := ParseJWKS(k.JWKS())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := jwt.Parse(raw, func(*jwt.Token) (any, error) { return pubs[0].Key, nil }); err != nil {
			t.Errorf("reloaded key's token does not verify: %v", err)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.pem")); !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("Load(missing) = %v, want not-exist", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); err == nil {
		t.Error("Load(garbage) succeeded")
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func TestKIDsDiffer(t *testing.T) {
	a, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if a.KID == b.KID || a.KID == "" {
		t.Errorf("kids %q %q", a.KID, b.KID)
	}
}

func TestParseJWKS(t *testing.T) {
	rsaKey, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := GenerateECDSAKey()
	if err != nil {
		t.Fatal(err)
	}
	both := MarshalJWKS(rsaKey.JWK(), ecKey.JWK(), JWK{KTY: "oct", KID: "sym"}, JWK{KTY: "RSA", Use: "enc", KID: "enc", N: "AQAB", E: "AQAB"})
	tests := []struct {
		name     string
		data     string
		wantKIDs []string
		wantErr  bool
	}{
		{name: "rsa and ec, skipping oct and enc keys", data: string(both), wantKIDs: []string{rsaKey.KID, ecKey.KID}},
		{name: "empty set", data: `{"keys":[]}`, wantKIDs: nil},
		{name: "not json", data: `nope`, wantErr: true},
		{name: "no keys member", data: `{}`, wantErr: true},
		{name: "bad modulus", data: `{"keys":[{"kty":"RSA","kid":"x","n":"!!","e":"AQAB"}]}`, wantErr: true},
		{name: "bad curve", data: `{"keys":[{"kty":"EC","kid":"x","crv":"P-1","x":"AQAB","y":"AQAB"}]}`, wantErr: true},
		{name: "point off curve", data: `{"keys":[{"kty":"EC","kid":"x","crv":"P-256","x":"AQAB","y":"AQAB"}]}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseJWKS([]byte(tt.data))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			var kids []string
			for _, k := range got {
				kids = append(kids, k.KID)
			}
			if !reflect.DeepEqual(kids, tt.wantKIDs) {
				t.Errorf("kids = %v, want %v", kids, tt.wantKIDs)
			}
		})
	}
}
