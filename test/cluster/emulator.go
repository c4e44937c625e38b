//go:build cluster

package cluster

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/cosmount/cosmount/internal/testproc"
	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/emulator/audit"
	"github.com/cosmount/cosmount/pkg/emulator/config"
)

// The emulator's view of the suite's world.
const (
	ClusterID       = "cosmount-e2e"
	ServiceInstance = "e2e-instance-0000"
	StaticBucket    = "e2e-static"
	SharedBucket    = "cosmount-shared"
	// WorkloadNS and WriterSA are the namespace and service account the
	// profiles trust; IntruderSA is trusted by none.
	WorkloadNS = "e2e"
	WriterSA   = "writer"
	IntruderSA = "intruder"
	// WriterProfileID is the profile static and inline volumes name;
	// VolumesProfileName the one the StorageClasses name.
	WriterProfileID    = "Profile-e2e-writer"
	VolumesProfileID   = "Profile-e2e-volumes"
	ProvisionerProfile = "Profile-e2e-provisioner"
	// The chart's StorageClasses name cosmount-${pod.namespace}.
	VolumesProfileName  = "cosmount-" + WorkloadNS
	ProvisionerProfName = "cosmount-provisioner"
	observerKeyID       = "e2e-observer"

	// Two tenants sharing the prefix class's bucket: each namespace's
	// profile (cosmount-<namespace>, trusted by every service account of
	// the namespace) may use only its own volumes' prefix.
	TenantA, TenantB = "tenant-a", "tenant-b"
	TenantSA         = "app"
)

// TenantProfileID is the ID of namespace ns's profile.
func TenantProfileID(ns string) string { return "Profile-e2e-" + ns }

// tenantProfile is cosmount-<ns>: trusted by a claim rule on the token's
// namespace, Writer on the shared bucket with IBM's fine-grained
// conditions limiting it to volumes/<ns>/ (the prefix class's layout).
func tenantProfile(ns string) config.Profile {
	own := "volumes/" + ns + "/*"
	return config.Profile{ID: TenantProfileID(ns), Name: "cosmount-" + ns,
		Rules: []config.Rule{{Name: ns, Conditions: []config.Condition{
			{Claim: "namespace", Operator: "EQUALS", Value: ns}}}},
		Policies: []config.Policy{{Role: config.RoleWriter, Bucket: SharedBucket, Rule: &config.AccessRule{
			Path: own, Prefix: own, Delimiters: []string{"/", ""}, BucketActions: true}}},
	}
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// Emulator is the host-side IBM IAM + COS.
type Emulator struct {
	IAM, COS string
	// Store is a COS client with the suite's observer HMAC key (Manager on
	// every bucket): it checks what pods did, it never acts for them.
	Store *cos.Client
	proc  *testproc.Process
}

// StartEmulator runs cosmount-emulator with a configuration whose only
// issuer is the cluster's API server, found through its discovery
// document: IAM accepts exactly the tokens kubelet gets for pods.
func (c *Cluster) StartEmulator(ctx context.Context, binary, controllerSA string) (*Emulator, error) {
	dir := filepath.Join(c.opts.Work, "emulator")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	link := func(ns, sa string) []config.Link {
		return []config.Link{{Cluster: ClusterID, Namespace: ns, ServiceAccount: sa}}
	}
	secret, err := randomHex(20)
	if err != nil {
		return nil, err
	}
	cfg := config.Config{
		AccountID: "e2e-account",
		Issuers: []config.Issuer{{
			Cluster:         ClusterID,
			Issuer:          c.APIServer,
			DiscoveryURL:    c.APIServer,
			DiscoveryCAFile: c.pki.CAFile(),
		}},
		HMACKeys: []config.HMACKey{{AccessKeyID: observerKeyID, SecretAccessKey: secret,
			ServiceInstance: ServiceInstance, Policies: []config.Policy{{Role: config.RoleManager}}}},
		ServiceInstances: []config.ServiceInstance{{ID: ServiceInstance, Name: "e2e"}},
		Profiles: []config.Profile{
			{ID: WriterProfileID, Name: "e2e-writer", Links: link(WorkloadNS, WriterSA),
				Policies: []config.Policy{{Role: config.RoleWriter}}},
			{ID: VolumesProfileID, Name: VolumesProfileName, Links: link(WorkloadNS, WriterSA),
				Policies: []config.Policy{{Role: config.RoleWriter}}},
			{ID: ProvisionerProfile, Name: ProvisionerProfName, Links: link("kube-system", controllerSA),
				Policies: []config.Policy{{Role: config.RoleManager}}},
			tenantProfile(TenantA),
			tenantProfile(TenantB),
		},
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	// 0600: it holds the observer HMAC secret.
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		return nil, err
	}
	ready := filepath.Join(dir, "ready")
	p, err := c.procs.start("cosmount-emulator", binary, []string{"serve",
		"--config=" + cfgPath, "--data-dir=" + filepath.Join(dir, "data"),
		"--iam-listen=127.0.0.1:0", "--cos-listen=127.0.0.1:0", "--ready-file=" + ready,
		"--audit-file=" + filepath.Join(c.opts.Logs, "emulator-audit.jsonl"),
		"--bucket=" + StaticBucket, "--bucket=" + SharedBucket,
	})
	if err != nil {
		return nil, err
	}
	e := &Emulator{proc: p}
	err = waitFor(ctx, "emulator ready file", time.Minute, []*testproc.Process{p}, func(context.Context) error {
		b, err := os.ReadFile(ready)
		if err != nil {
			return err
		}
		for _, f := range strings.Fields(string(b)) {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "iam":
				e.IAM = v
			case "cos":
				e.COS = v
			}
		}
		if e.IAM == "" || e.COS == "" {
			return fmt.Errorf("ready file %q incomplete", b)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	e.Store, err = cos.New(cos.Options{Endpoint: e.COS, UsePathStyle: true, ServiceInstanceID: ServiceInstance,
		HMAC: &cos.HMAC{AccessKeyID: observerKeyID, SecretAccessKey: secret}})
	if err != nil {
		return nil, err
	}
	logStep("emulator: IAM %s, COS %s, trusting issuer %s via discovery", e.IAM, e.COS, c.APIServer)
	return e, nil
}

// AuditLen is the number of audit entries so far; pass it to Audit to see
// only what came after.
func (e *Emulator) AuditLen(ctx context.Context) (int, error) {
	entries, err := e.Audit(ctx, 0)
	return len(entries), err
}

// Audit returns the emulator's audit entries from index since on.
func (e *Emulator) Audit(ctx context.Context, since int) ([]audit.Entry, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.COS+"/_emulator/audit?since="+strconv.Itoa(since), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("audit: %s", resp.Status)
	}
	var out []audit.Entry
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var en audit.Entry
		if err := json.Unmarshal(sc.Bytes(), &en); err != nil {
			return nil, err
		}
		out = append(out, en)
	}
	return out, sc.Err()
}

// ReadObject returns an object's content, read with the suite's own HMAC
// key (the observer), not with any pod's identity.
func (e *Emulator) ReadObject(ctx context.Context, bucket, key string) ([]byte, error) {
	rc, _, err := e.Store.GetObject(ctx, bucket, key, cos.GetOptions{})
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}
