package iamserver

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/IBM/go-sdk-core/v5/core"

	"github.com/cosmount/cosmount/pkg/emulator/config"
	"github.com/cosmount/cosmount/pkg/emulator/satoken"
)

// TestIBMSDKFidelity drives the handler with IBM's own Go SDK authenticators:
// if they obtain tokens and surface refusals, real IBM clients will too.
func TestIBMSDKFidelity(t *testing.T) {
	testKeys(t)
	// The SDK judges expiry by the wall clock, so this server uses it too.
	srv, err := New(baseConfig(t), Options{SigningKey: accessKey})
	if err != nil {
		t.Fatal(err)
	}
	url := httptestServer(t, srv)
	client := &http.Client{Timeout: 30 * time.Second}

	tokenFile := func(t *testing.T, ns, sa string) string {
		raw, err := issuerKey.Mint(satoken.Claims{Issuer: testIssuer, Audience: []string{"iam"}, Namespace: ns,
			ServiceAccount: sa, Pod: "pod-1", Lifetime: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "token")
		// kubelet's projected file as the SDK reads it, newline included.
		if err := os.WriteFile(file, []byte(raw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return file
	}

	tests := []struct {
		name       string
		auth       func(t *testing.T) (interface{ GetToken() (string, error) }, error)
		wantID     string
		wantType   config.PrincipalType
		wantRefuse string // IAM error code
	}{
		{name: "container authenticator, profile id", wantID: "Profile-link", wantType: config.PrincipalProfile,
			auth: func(t *testing.T) (interface{ GetToken() (string, error) }, error) {
				return core.NewContainerAuthenticatorBuilder().SetCRTokenFilename(tokenFile(t, "team-a", "writer")).
					SetIAMProfileID("Profile-link").SetURL(url).SetClient(client).Build()
			}},
		{name: "container authenticator, profile name and client credentials", wantID: "Profile-crn", wantType: config.PrincipalProfile,
			auth: func(t *testing.T) (interface{ GetToken() (string, error) }, error) {
				return core.NewContainerAuthenticatorBuilder().SetCRTokenFilename(tokenFile(t, "team-b", "app")).
					SetIAMProfileName("crn-profile").SetClientIDSecret("bx", "bx").SetURL(url + TokenPath).SetClient(client).Build()
			}},
		{name: "container authenticator, profile not eligible", wantRefuse: "BXNIM0398E",
			auth: func(t *testing.T) (interface{ GetToken() (string, error) }, error) {
				return core.NewContainerAuthenticatorBuilder().SetCRTokenFilename(tokenFile(t, "team-a", "intruder")).
					SetIAMProfileID("Profile-link").SetURL(url).SetClient(client).Build()
			}},
		{name: "container authenticator, unknown profile", wantRefuse: CodeUnknownProfile,
			auth: func(t *testing.T) (interface{ GetToken() (string, error) }, error) {
				return core.NewContainerAuthenticatorBuilder().SetCRTokenFilename(tokenFile(t, "team-a", "writer")).
					SetIAMProfileName("nope").SetURL(url).SetClient(client).Build()
			}},
		{name: "iam authenticator, apikey", wantID: "ApiKey-1", wantType: config.PrincipalAPIKey,
			auth: func(*testing.T) (interface{ GetToken() (string, error) }, error) {
				return core.NewIamAuthenticatorBuilder().SetApiKey("secret-api-key-1").SetURL(url).SetClient(client).Build()
			}},
		{name: "iam authenticator, unknown apikey", wantRefuse: "BXNIM0415E",
			auth: func(*testing.T) (interface{ GetToken() (string, error) }, error) {
				return core.NewIamAuthenticatorBuilder().SetApiKey("not-a-key").SetURL(url).SetClient(client).Build()
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auth, err := tt.auth(t)
			if err != nil {
				t.Fatalf("build authenticator: %v", err)
			}
			tok, err := auth.GetToken()
			if tt.wantRefuse != "" {
				var ae *core.AuthenticationError
				if !errors.As(err, &ae) || ae.Response == nil {
					t.Fatalf("GetToken error = %v, want an AuthenticationError", err)
				}
				result, _ := ae.Response.Result.(map[string]any)
				if ae.Response.StatusCode != http.StatusBadRequest || result["errorCode"] != tt.wantRefuse {
					t.Fatalf("refusal = %d %v", ae.Response.StatusCode, result)
				}
				if msg, _ := result["errorMessage"].(string); msg == "" || !strings.Contains(err.Error(), msg) {
					t.Errorf("SDK error %q does not carry IAM's message %q", err, msg)
				}
				if ae.Response.Headers.Get("transaction-id") == "" {
					t.Error("no transaction-id header reached the SDK")
				}
				return
			}
			if err != nil {
				t.Fatalf("GetToken: %v", err)
			}
			p, err := srv.VerifyAccessToken(tok)
			if err != nil || p.ID != tt.wantID || p.Type != tt.wantType {
				t.Fatalf("VerifyAccessToken = %+v, %v", p, err)
			}
			// A second call is served from the SDK's cache: the token is good for an hour.
			again, err := auth.GetToken()
			if err != nil || again != tok {
				t.Errorf("second GetToken: changed=%v err=%v", again != tok, err)
			}
		})
	}
}
