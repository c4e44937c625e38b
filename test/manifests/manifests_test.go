package manifests_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"

	"github.com/cosmount/cosmount/test/manifests/render"
)

const driverName = "cosmount.csi.io"

// objectsOf returns the objects of type T (a pointer to an API type).
func objectsOf[T any](objs []object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// named returns the one object of type T called name.
func named[T metav1.Object](t *testing.T, objs []object, name string) T {
	t.Helper()
	var found []T
	for _, v := range objectsOf[T](objs) {
		if v.GetName() == name {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want exactly one %T named %q, found %d", zero, name, len(found))
	}
	return found[0]
}

// renderObjects renders the chart as `make manifests` does, with overrides on top.
func renderObjects(t *testing.T, overrides map[string]any) []object {
	t.Helper()
	files, err := render.Chart(filepath.Join(repoRoot(t), render.ChartDir), render.Merge(plainValues(t), overrides))
	if err != nil {
		t.Fatal(err)
	}
	return decodeFiles(t, files)
}

// plainValues are the values deploy/kubernetes is rendered with on top of the chart's defaults.
func plainValues(t *testing.T) map[string]any {
	t.Helper()
	vals, err := render.PlainValues(filepath.Join(repoRoot(t), render.ChartDir))
	if err != nil {
		t.Fatal(err)
	}
	return vals
}

func container(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

func volume(t *testing.T, spec corev1.PodSpec, name string) corev1.Volume {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %q", name)
	return corev1.Volume{}
}

func mountAt(c corev1.Container, path string) (corev1.VolumeMount, bool) {
	for _, m := range c.VolumeMounts {
		if m.MountPath == path {
			return m, true
		}
	}
	return corev1.VolumeMount{}, false
}

// TestEveryManifestDecodesStrictly decodes every YAML file under deploy/ except the chart (whose
// templates are not YAML until rendered; the render tests cover it).
func TestEveryManifestDecodesStrictly(t *testing.T) {
	root := repoRoot(t)
	var files []string
	err := filepath.WalkDir(filepath.Join(root, "deploy"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path == filepath.Join(root, render.ChartDir) {
			return filepath.SkipDir
		}
		if ext := filepath.Ext(path); !d.IsDir() && (ext == ".yaml" || ext == ".yml") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 8 {
		t.Fatalf("found only %d YAML files under deploy/: %v", len(files), files)
	}
	for _, path := range files {
		rel, _ := filepath.Rel(root, path)
		t.Run(rel, func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			objs := decodeFiles(t, map[string]string{rel: string(data)})
			if len(objs) == 0 {
				t.Fatal("no Kubernetes object in the file")
			}
		})
	}
}

func TestPlainManifestsMatchChart(t *testing.T) {
	root := repoRoot(t)
	want, err := render.Chart(filepath.Join(root, render.ChartDir), plainValues(t))
	if err != nil {
		t.Fatal(err)
	}
	const hint = "deploy/kubernetes is stale: run `make manifests`"
	paths, err := filepath.Glob(filepath.Join(root, render.OutputDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, p := range paths {
		have = append(have, filepath.Base(p))
	}
	if names := render.Names(want); !slices.Equal(have, names) {
		t.Fatalf("%s: files %v, the chart renders %v", hint, have, names)
	}
	for _, name := range have {
		got, err := os.ReadFile(filepath.Join(root, render.OutputDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want[name] {
			t.Errorf("%s: %s differs from the chart's render, first at line %d", hint, name, firstDiffLine(string(got), want[name]))
		}
	}
}

func firstDiffLine(a, b string) int {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return i + 1
		}
	}
	return min(len(al), len(bl)) + 1
}

func TestPluginArguments(t *testing.T) {
	checkAllPluginArgs(t, renderObjects(t, nil), pluginFlags(t, repoRoot(t)))
}

func TestCSIDriver(t *testing.T) {
	d := named[*storagev1.CSIDriver](t, renderObjects(t, nil), driverName)
	s := d.Spec
	if s.AttachRequired == nil || *s.AttachRequired {
		t.Error("attachRequired must be false")
	}
	if s.PodInfoOnMount == nil || !*s.PodInfoOnMount {
		t.Error("podInfoOnMount must be true")
	}
	if s.RequiresRepublish == nil || !*s.RequiresRepublish {
		t.Error("requiresRepublish must be true: renewed pod tokens only reach the driver by republish")
	}
	if s.FSGroupPolicy == nil || *s.FSGroupPolicy != storagev1.FileFSGroupPolicy {
		t.Errorf("fsGroupPolicy = %v, want File", s.FSGroupPolicy)
	}
	// Inline volumes are the admin's choice, off by default (inlineVolumes.enabled).
	if want := []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent}; !slices.Equal(s.VolumeLifecycleModes, want) {
		t.Errorf("volumeLifecycleModes = %v, want %v", s.VolumeLifecycleModes, want)
	}
	if len(s.TokenRequests) != 1 || s.TokenRequests[0].Audience != "iam" ||
		s.TokenRequests[0].ExpirationSeconds == nil || *s.TokenRequests[0].ExpirationSeconds != 3600 {
		t.Errorf("tokenRequests = %+v, want one for audience iam lasting 3600 s", s.TokenRequests)
	}
	if s.ServiceAccountTokenInSecrets != nil {
		t.Error("serviceAccountTokenInSecrets must be opt-in: API servers before 1.35 reject it")
	}
}

func TestNodeDaemonSet(t *testing.T) {
	ds := named[*appsv1.DaemonSet](t, renderObjects(t, nil), "cosmount-node")
	spec := ds.Spec.Template.Spec
	if ds.Namespace != render.ReleaseNamespace {
		t.Errorf("namespace %q", ds.Namespace)
	}
	if spec.HostNetwork {
		t.Error("hostNetwork is on by default")
	}
	plugin := container(t, spec, "cosmount-csi")
	if sc := plugin.SecurityContext; sc == nil || (sc.Privileged != nil && *sc.Privileged) ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Error("the node plugin runs no FUSE server: it must be unprivileged, without capabilities")
	}
	if _, ok := mountAt(plugin, "/var/lib/kubelet"); ok {
		t.Error("the node plugin must not mount the kubelet directory: the mounter does the mounting")
	}
	for _, want := range []string{
		"--mode=node", "--endpoint=unix:///csi/csi.sock", "--node-id=$(NODE_NAME)", "--mounter-endpoint=unix:///run/cosmount/mounter/mounter.sock",
		"--iam-endpoint=https://iam.cloud.ibm.com", "--token-audience=iam", "--metrics-address=:9810",
		"--cos-endpoint=https://s3.us-south.cloud-object-storage.appdomain.cloud",
		"--allowed-iam-endpoints=iam.cloud.ibm.com,private.iam.cloud.ibm.com,private.*.iam.cloud.ibm.com",
		"--allowed-cos-endpoints=s3.*.cloud-object-storage.appdomain.cloud,s3.private.*.cloud-object-storage.appdomain.cloud,s3.direct.*.cloud-object-storage.appdomain.cloud",
		"--inline-volumes=false",
	} {
		if !slices.Contains(plugin.Args, want) {
			t.Errorf("node plugin args %v lack %s", plugin.Args, want)
		}
	}
	if len(plugin.Env) == 0 || plugin.Env[0].Name != "NODE_NAME" || plugin.Env[0].ValueFrom == nil ||
		plugin.Env[0].ValueFrom.FieldRef == nil || plugin.Env[0].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("NODE_NAME must come from spec.nodeName: %+v", plugin.Env)
	}
	checkHostPaths(t, spec, plugin, map[string]hostPathMount{
		"/var/lib/kubelet/plugins/cosmount.csi.io": {"/csi", corev1.HostPathDirectoryOrCreate},
		"/run/cosmount/mounter":                    {"/run/cosmount/mounter", corev1.HostPathDirectoryOrCreate},
	})

	reg := container(t, spec, "node-driver-registrar")
	if !strings.HasPrefix(reg.Image, "registry.k8s.io/sig-storage/csi-node-driver-registrar:") {
		t.Errorf("registrar image %s", reg.Image)
	}
	if !slices.Contains(reg.Args, "--kubelet-registration-path=/var/lib/kubelet/plugins/cosmount.csi.io/csi.sock") {
		t.Errorf("registrar args %v", reg.Args)
	}
	if m, ok := mountAt(reg, "/registration"); !ok || volume(t, spec, m.Name).HostPath.Path != "/var/lib/kubelet/plugins_registry" {
		t.Error("registrar must mount the kubelet plugins_registry dir at /registration")
	}
	if !slices.Contains(reg.Args, "--http-endpoint=:9809") || reg.LivenessProbe == nil || reg.LivenessProbe.HTTPGet == nil ||
		reg.LivenessProbe.HTTPGet.Path != "/healthz" || reg.LivenessProbe.HTTPGet.Port.StrVal != "registrar-hz" {
		t.Errorf("registrar must serve /healthz on --http-endpoint and be probed there: %v %+v", reg.Args, reg.LivenessProbe)
	}
	probe := container(t, spec, "liveness-probe")
	if !strings.HasPrefix(probe.Image, "registry.k8s.io/sig-storage/livenessprobe:") || !slices.Contains(probe.Args, "--http-endpoint=:9808") {
		t.Errorf("liveness probe %s %v", probe.Image, probe.Args)
	}
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType {
		t.Errorf("update strategy %q: the node plugin holds no mount and should roll by itself", ds.Spec.UpdateStrategy.Type)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the node plugin uses no Kubernetes API and must not mount an API token")
	}
}

type hostPathMount struct {
	mountPath string
	typ       corev1.HostPathType
}

// checkHostPaths checks that each host path is a volume of its type mounted
// in c at its path.
func checkHostPaths(t *testing.T, spec corev1.PodSpec, c corev1.Container, want map[string]hostPathMount) {
	t.Helper()
	for hostPath, w := range want {
		var found bool
		for _, v := range spec.Volumes {
			if v.HostPath == nil || v.HostPath.Path != hostPath {
				continue
			}
			found = true
			if v.HostPath.Type == nil || *v.HostPath.Type != w.typ {
				t.Errorf("hostPath %s type %v, want %s", hostPath, v.HostPath.Type, w.typ)
			}
			if m, ok := mountAt(c, w.mountPath); !ok || m.Name != v.Name {
				t.Errorf("hostPath %s is not mounted at %s in %s", hostPath, w.mountPath, c.Name)
			}
		}
		if !found {
			t.Errorf("no hostPath volume %s", hostPath)
		}
	}
}

// The mounter owns the FUSE servers: privileged, Bidirectional kubelet
// directory, updated only by hand, no liveness probe that could end every
// mount of its node, a grace period its shutdown fits in.
func TestMounterDaemonSet(t *testing.T) {
	ds := named[*appsv1.DaemonSet](t, renderObjects(t, nil), "cosmount-mounter")
	spec := ds.Spec.Template.Spec
	if ds.Spec.UpdateStrategy.Type != appsv1.OnDeleteDaemonSetStrategyType {
		t.Errorf("update strategy %q: a rolling update would end every mount on the node", ds.Spec.UpdateStrategy.Type)
	}
	m := container(t, spec, "mounter")
	if sc := m.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Error("the mounter must be privileged (FUSE mounts, Bidirectional propagation, memory cgroups)")
	}
	if km, ok := mountAt(m, "/var/lib/kubelet"); !ok || km.MountPropagation == nil || *km.MountPropagation != corev1.MountPropagationBidirectional {
		t.Error("the mounter must mount the kubelet directory with Bidirectional propagation")
	}
	checkHostPaths(t, spec, m, map[string]hostPathMount{
		"/var/lib/kubelet":      {"/var/lib/kubelet", corev1.HostPathDirectory},
		"/dev/fuse":             {"/dev/fuse", corev1.HostPathCharDev},
		"/run/cosmount/volumes": {"/run/cosmount/volumes", corev1.HostPathDirectoryOrCreate},
		"/run/cosmount/mounter": {"/run/cosmount/mounter", corev1.HostPathDirectoryOrCreate},
	})
	for _, want := range []string{
		"--mode=mounter", "--mounter-endpoint=unix:///run/cosmount/mounter/mounter.sock", "--state-dir=/run/cosmount/volumes",
		"--cosmount-binary=/usr/local/bin/cosmount", "--server-memory-limit=512Mi", "--shutdown-grace=50s",
		// Per-volume series name volumes: unreachable from pods unless mounterMetrics.exposed.
		"--mounter-metrics-address=127.0.0.1:9812",
		// Temporary files in the pod's own emptyDir, capped per volume.
		"--temp-dir=/var/lib/cosmount/tmp", "--temp-limit=1Gi",
	} {
		if !slices.Contains(m.Args, want) {
			t.Errorf("mounter args %v lack %s", m.Args, want)
		}
	}
	if tmp := volume(t, spec, "temp"); tmp.EmptyDir == nil {
		t.Errorf("temp volume %+v is not an emptyDir", tmp)
	}
	if len(m.Ports) != 0 {
		t.Errorf("mounter ports %v: its metrics listen on loopback by default", m.Ports)
	}
	if m.LivenessProbe != nil {
		t.Error("a liveness probe on the mounter would end every mount of its node when it fails")
	}
	if spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds != 60 {
		t.Errorf("terminationGracePeriodSeconds = %v, want 60 (shutdown grace 50s + 10s)", spec.TerminationGracePeriodSeconds)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the mounter uses no Kubernetes API and must not mount an API token")
	}
}

func TestControllerDeployment(t *testing.T) {
	d := named[*appsv1.Deployment](t, renderObjects(t, nil), "cosmount-controller")
	spec := d.Spec.Template.Spec
	plugin := container(t, spec, "cosmount-csi")
	for _, want := range []string{
		"--mode=controller", "--endpoint=unix:///csi/csi.sock",
		"--controller-token-file=/var/run/secrets/tokens/iam-token", "--controller-trusted-profile=cosmount-provisioner",
		"--allowed-cos-endpoints=s3.*.cloud-object-storage.appdomain.cloud,s3.private.*.cloud-object-storage.appdomain.cloud,s3.direct.*.cloud-object-storage.appdomain.cloud",
	} {
		if !slices.Contains(plugin.Args, want) {
			t.Errorf("controller args %v lack %s", plugin.Args, want)
		}
	}
	tok := volume(t, spec, "iam-token")
	if tok.Projected == nil || len(tok.Projected.Sources) != 1 || tok.Projected.Sources[0].ServiceAccountToken == nil {
		t.Fatalf("iam-token volume %+v is not a projected service-account token", tok)
	}
	sat := tok.Projected.Sources[0].ServiceAccountToken
	if sat.Audience != "iam" || sat.Path != "iam-token" || sat.ExpirationSeconds == nil || *sat.ExpirationSeconds > 3600 {
		t.Errorf("controller token %+v: want audience iam, path iam-token, at most 3600 s", sat)
	}
	if m, ok := mountAt(plugin, "/var/run/secrets/tokens"); !ok || m.Name != "iam-token" || !m.ReadOnly {
		t.Error("the controller token must be mounted read-only at /var/run/secrets/tokens")
	}
	prov := container(t, spec, "csi-provisioner")
	if !strings.HasPrefix(prov.Image, "registry.k8s.io/sig-storage/csi-provisioner:") {
		t.Errorf("provisioner image %s", prov.Image)
	}
	for _, want := range []string{"--csi-address=/csi/csi.sock", "--extra-create-metadata", "--leader-election"} {
		if !slices.Contains(prov.Args, want) {
			t.Errorf("provisioner args %v lack %s", prov.Args, want)
		}
	}
	container(t, spec, "liveness-probe")
	if spec.ServiceAccountName != "cosmount-controller" {
		t.Errorf("service account %q", spec.ServiceAccountName)
	}
}

func TestStorageClasses(t *testing.T) {
	root := repoRoot(t)
	attrs, _ := driverNames(t, root)
	objs := renderObjects(t, nil)
	for _, class := range []string{"standard", "smart", "cold", "vault"} {
		sc := named[*storagev1.StorageClass](t, objs, "cosmount-"+class)
		p := sc.Parameters
		if p["locationConstraint"] != "us-south-"+class || p["provisioning"] != "bucket" {
			t.Errorf("%s: locationConstraint %q provisioning %q", sc.Name, p["locationConstraint"], p["provisioning"])
		}
		if p["bucketName"] != "" {
			t.Errorf("%s: bucket mode names its own buckets, bucketName must be unset", sc.Name)
		}
	}
	prefix := named[*storagev1.StorageClass](t, objs, "cosmount-prefix")
	if prefix.Parameters["provisioning"] != "prefix" || prefix.Parameters["bucketName"] == "" || prefix.Parameters["locationConstraint"] != "" {
		t.Errorf("cosmount-prefix parameters %v", prefix.Parameters)
	}
	classes := objectsOf[*storagev1.StorageClass](objs)
	if len(classes) != 5 {
		t.Errorf("%d StorageClasses, want 5", len(classes))
	}
	for _, sc := range classes {
		if sc.Provisioner != driverName {
			t.Errorf("%s: provisioner %q", sc.Name, sc.Provisioner)
		}
		if sc.ReclaimPolicy == nil || *sc.ReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
			t.Errorf("%s: reclaimPolicy %v, want Delete", sc.Name, sc.ReclaimPolicy)
		}
		for _, k := range []string{"cosEndpoint", "iamEndpoint", "trustedProfileName"} {
			if sc.Parameters[k] == "" {
				t.Errorf("%s: no %s", sc.Name, k)
			}
		}
		checkAttributes(t, sc.Name, sc.Parameters, attrs)
	}
}

// checkAttributes fails on keys the driver would answer InvalidArgument for.
func checkAttributes(t *testing.T, where string, params map[string]string, known map[string]bool) {
	t.Helper()
	for k := range params {
		if !known[k] && !strings.HasPrefix(k, "csi.storage.k8s.io/") {
			t.Errorf("%s: attribute %q is unknown to pkg/driver", where, k)
		}
	}
}

func TestRBACIsLeastPrivilege(t *testing.T) {
	objs := renderObjects(t, map[string]any{"controller": map[string]any{"apiKeySecret": map[string]any{"name": "cos-key"}}})
	var rules []rbacv1.PolicyRule
	for _, r := range objectsOf[*rbacv1.ClusterRole](objs) {
		rules = append(rules, r.Rules...)
	}
	for _, r := range objectsOf[*rbacv1.Role](objs) {
		rules = append(rules, r.Rules...)
	}
	for _, r := range rules {
		for _, list := range [][]string{r.Verbs, r.Resources, r.APIGroups, r.ResourceNames} {
			if slices.Contains(list, "*") {
				t.Errorf("wildcard in rule %+v", r)
			}
		}
		if slices.Contains(r.Resources, "secrets") && len(r.ResourceNames) == 0 {
			t.Errorf("rule %+v grants every secret", r)
		}
	}
	prov := named[*rbacv1.ClusterRole](t, objs, "cosmount-provisioner")
	want := map[string][]string{
		"/persistentvolumes":            {"create", "delete", "get", "list", "patch", "watch"},
		"/persistentvolumeclaims":       {"get", "list", "update", "watch"},
		"storage.k8s.io/storageclasses": {"get", "list", "watch"},
		"/events":                       {"create", "list", "patch", "update", "watch"},
		"storage.k8s.io/csinodes":       {"get", "list", "watch"},
		"/nodes":                        {"get", "list", "watch"},
		"/secrets":                      {"get"},
	}
	got := map[string][]string{}
	for _, r := range prov.Rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				verbs := append(got[g+"/"+res], r.Verbs...)
				slices.Sort(verbs)
				got[g+"/"+res] = verbs
			}
		}
	}
	for k, verbs := range want {
		if !slices.Equal(got[k], verbs) {
			t.Errorf("provisioner ClusterRole on %s: verbs %v, want %v", k, got[k], verbs)
		}
		delete(got, k)
	}
	if len(got) != 0 {
		t.Errorf("provisioner ClusterRole grants more than it needs: %v", got)
	}

	// Bindings: the node's service account is bound to nothing; the controller's to the provisioner role.
	for _, b := range objectsOf[*rbacv1.ClusterRoleBinding](objs) {
		for _, s := range b.Subjects {
			if s.Name == "cosmount-node" {
				t.Errorf("%s binds the node service account", b.Name)
			}
		}
	}
	for _, b := range objectsOf[*rbacv1.RoleBinding](objs) {
		for _, s := range b.Subjects {
			if s.Name == "cosmount-node" {
				t.Errorf("%s binds the node service account", b.Name)
			}
		}
	}
	b := named[*rbacv1.ClusterRoleBinding](t, objs, "cosmount-provisioner")
	if b.RoleRef.Name != "cosmount-provisioner" || len(b.Subjects) != 1 || b.Subjects[0].Name != "cosmount-controller" || b.Subjects[0].Namespace != render.ReleaseNamespace {
		t.Errorf("provisioner binding %+v", b)
	}
	leases := named[*rbacv1.Role](t, objs, "cosmount-leader-election")
	if len(leases.Rules) != 1 || !slices.Equal(leases.Rules[0].Resources, []string{"leases"}) {
		t.Errorf("leader election role %+v", leases.Rules)
	}
}

// TestHelmLint runs Helm's own chart linter (as `helm lint --strict` would) and fails on any finding,
// warnings included: they flag things such as invalid object names or a missing icon.
func TestHelmLint(t *testing.T) {
	linter := lint.All(filepath.Join(repoRoot(t), render.ChartDir), plainValues(t), render.ReleaseNamespace, true)
	for _, m := range linter.Messages {
		if m.Severity > support.InfoSev {
			t.Errorf("helm lint: %s", m)
		}
	}
}
