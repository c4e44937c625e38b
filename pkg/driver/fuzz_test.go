package driver

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/cosmount/cosmount/pkg/volume"
)

// FuzzPodToken: csi.storage.k8s.io/serviceAccount.tokens as kubelet (or
// anyone who can create a pod's volume context) sends it. A token is found
// only for the audience; an error never quotes a token.
func FuzzPodToken(f *testing.F) {
	f.Add(`{"iam":{"token":"eyJhbGciOiJSUzI1NiJ9.payload.sig","expirationTimestamp":"2026-01-01T00:00:00Z"}}`, "iam")
	f.Add(`{"other":{"token":"secret-token-of-other-audience"}}`, "iam")
	f.Add(`{"iam":{"token":"   "}}`, "iam")
	f.Add(`{"iam":"not an object containing-a-token-like-string"}`, "iam")
	f.Add(`[]`, "iam")
	f.Add(``, "iam")
	f.Fuzz(func(t *testing.T, raw, audience string) {
		for _, inSecrets := range []bool{true, false} {
			secrets, vc := map[string]string{}, map[string]string{}
			if inSecrets {
				secrets[keyTokens] = raw
			} else {
				vc[keyTokens] = raw
			}
			tok, err := podToken(secrets, vc, audience)
			var parsed map[string]struct {
				Token string `json:"token"`
			}
			jsonOK := json.Unmarshal([]byte(raw), &parsed) == nil
			if err == nil {
				if !jsonOK || strings.TrimSpace(tok) == "" || parsed[audience].Token != tok {
					t.Fatalf("%q for audience %q gave token %q", raw, audience, tok)
				}
				continue
			}
			// Audience names are not secret and are named in the error;
			// a token that is also (part of) one proves nothing.
			named := audience
			for a := range parsed {
				named += "\x00" + a
			}
			for _, p := range parsed {
				if len(p.Token) >= 8 && strings.Contains(err.Error(), p.Token) && !strings.Contains(named, p.Token) {
					t.Fatalf("error %q quotes a token", err)
				}
			}
		}
	})
}

// FuzzParseVolumeID: volume IDs come back from the orchestrator in
// DeleteVolume and ValidateVolumeCapabilities. One that parses names a
// valid bucket and endpoint and prints back to an ID that parses the same.
func FuzzParseVolumeID(f *testing.F) {
	f.Add("bucket:my-bucket@ibm:us-south")
	f.Add("prefix:shared/team/a@http://127.0.0.1:8080")
	f.Add("prefix:shared/../x@http://127.0.0.1:1")
	f.Add("bucket:UPPER@http://x")
	f.Add("bucket:b@ibm:")
	f.Add("prefix:b/@https://s3.example.com")
	f.Add("bucket::@@")
	f.Fuzz(func(t *testing.T, id string) {
		ref, ok := parseVolumeID(id)
		if !ok {
			if ref != (volumeRef{}) {
				t.Fatalf("refused %q with %+v", id, ref)
			}
			return
		}
		if volume.CheckBucket(ref.bucket) != nil || volume.CheckURL(ref.endpoint) != nil {
			t.Fatalf("%q parsed as %+v", id, ref)
		}
		again := "bucket:" + ref.bucket + "@" + compactEndpoint(ref.endpoint)
		if ref.prefix != "" {
			again = "prefix:" + ref.bucket + "/" + ref.prefix + "@" + compactEndpoint(ref.endpoint)
		}
		if back, ok := parseVolumeID(again); !ok || back != ref {
			t.Fatalf("%q -> %+v -> %q -> %+v %v", id, ref, again, back, ok)
		}
	})
}
