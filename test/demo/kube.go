package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/cosmount/cosmount/pkg/emulator/audit"
)

// What kubelet knows about a pod and hands to the plugin: this file plays
// kubelet's part, and reads the emulator's audit.

// The volume_context key kubelet fills with the pod's projected tokens
// (CSIDriver tokenRequests), one entry per audience.
const tokensKey = "csi.storage.k8s.io/serviceAccount.tokens"

// pod is one pod that mounts the demo volume.
type pod struct {
	name, namespace, serviceAccount string
	uid                             string // from the token, as kubelet's would match
	tokenFile                       string // the projected token kubelet requested for it
	volumeID                        string
}

// podClaims are the claims of a projected service-account token the demo
// prints and checks.
type podClaims struct {
	Issuer     string   `json:"iss"`
	Subject    string   `json:"sub"`
	Audience   []string `json:"aud"`
	Expiry     int64    `json:"exp"`
	Kubernetes struct {
		Namespace      string `json:"namespace"`
		ServiceAccount struct {
			Name string `json:"name"`
		} `json:"serviceaccount"`
		Pod struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"pod"`
	} `json:"kubernetes.io"`
}

// readClaims decodes the payload of the JWT in path. It does not verify the
// signature (the emulator's IAM does that); it only shows what is inside.
func readClaims(path string) (*podClaims, int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	tok := strings.TrimSpace(string(data))
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		// Never echo the content: it would be the token.
		return nil, 0, fmt.Errorf("%s does not hold a JWT", path)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, 0, fmt.Errorf("%s: JWT payload: %w", path, err)
	}
	var c podClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, 0, fmt.Errorf("%s: JWT claims: %w", path, err)
	}
	return &c, len(tok), nil
}

// check compares the claims with the pod the token was minted for.
func (c *podClaims) check(p *pod, audience string) error {
	k := c.Kubernetes
	if k.Namespace != p.namespace || k.ServiceAccount.Name != p.serviceAccount || k.Pod.Name != p.name {
		return fmt.Errorf("token claims %s/%s/%s, want %s/%s/%s",
			k.Namespace, k.ServiceAccount.Name, k.Pod.Name, p.namespace, p.serviceAccount, p.name)
	}
	if !slices.Contains(c.Audience, audience) {
		return fmt.Errorf("token audiences %v lack %q", c.Audience, audience)
	}
	if time.Until(time.Unix(c.Expiry, 0)) <= 0 {
		return fmt.Errorf("token already expired at %s", time.Unix(c.Expiry, 0))
	}
	return nil
}

// tokensJSON is the value kubelet puts under tokensKey.
func tokensJSON(tokenFile, audience string, expiry time.Time) (string, error) {
	data, err := os.ReadFile(tokenFile)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(map[string]map[string]string{audience: {
		"token":               strings.TrimSpace(string(data)),
		"expirationTimestamp": expiry.UTC().Format(time.RFC3339),
	}})
	return string(b), err
}

// volume is the static PV of the demo: the bucket, the endpoints and the
// trusted profile the pods go through.
type volume struct {
	bucket, cosEndpoint, iamEndpoint, profileID string
}

// publishRequest is the NodePublishVolume kubelet sends when p starts: the
// PV's attributes, the pod info (podInfoOnMount) and the pod's token.
func (v volume) publishRequest(kubeletDir string, p *pod, claims *podClaims, audience string) (*csi.NodePublishVolumeRequest, error) {
	tokens, err := tokensJSON(p.tokenFile, audience, time.Unix(claims.Expiry, 0))
	if err != nil {
		return nil, err
	}
	return &csi.NodePublishVolumeRequest{
		VolumeId: p.volumeID,
		// kubelet's layout; it creates the parent, the plugin the target.
		TargetPath: filepath.Join(kubeletDir, "pods", p.uid, "volumes", "kubernetes.io~csi", p.volumeID, "mount"),
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		},
		VolumeContext: map[string]string{
			"bucketName":                             v.bucket,
			"cosEndpoint":                            v.cosEndpoint,
			"iamEndpoint":                            v.iamEndpoint,
			"trustedProfileID":                       v.profileID,
			"csi.storage.k8s.io/pod.name":            p.name,
			"csi.storage.k8s.io/pod.namespace":       p.namespace,
			"csi.storage.k8s.io/pod.uid":             p.uid,
			"csi.storage.k8s.io/serviceAccount.name": p.serviceAccount,
			"csi.storage.k8s.io/ephemeral":           "false",
			tokensKey:                                tokens,
		},
	}, nil
}

// describeContext lists a volume context for printing, the token replaced by
// a note: tokens are never printed.
func describeContext(vc map[string]string) []string {
	keys := make([]string, 0, len(vc))
	for k := range vc {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var lines []string
	for _, k := range keys {
		v := vc[k]
		if k == tokensKey {
			v = `{"iam":{"token":"<the pod's token, not shown>","expirationTimestamp":...}}`
		}
		lines = append(lines, fmt.Sprintf("%-42s %s", k, v))
	}
	return lines
}

// auditEntries fetches the emulator's audit log from entry since on, through
// its admin API (on the COS listener, loopback only).
func auditEntries(ctx context.Context, cosURL string, since int) ([]audit.Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/_emulator/audit?since=%d", cosURL, since), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("emulator audit: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("emulator audit: HTTP %d", resp.StatusCode)
	}
	var out []audit.Entry
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e audit.Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("emulator audit: %w", err)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// formatAudit renders one audit entry as one line.
func formatAudit(e audit.Entry) string {
	who := "-" // IAM requests that failed, and anonymous COS ones
	if e.PrincipalID != "" {
		who = e.PrincipalType + " " + e.PrincipalID
	}
	scheme := e.AuthScheme
	if scheme == "" {
		scheme = "-"
	}
	status := fmt.Sprint(e.Status)
	if e.ErrorCode != "" {
		status += " " + e.ErrorCode
	}
	line := fmt.Sprintf("%-3s %-6s %-26s %-14s %-16s %-7s %s", e.Service, e.Method, e.Path, e.Operation, status, scheme, who)
	if e.Bytes > 0 {
		line += fmt.Sprintf(" (%d bytes)", e.Bytes)
	}
	return line
}
