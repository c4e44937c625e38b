package manifests_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/cosmount/cosmount/test/manifests/render"
)

// without returns the plain-manifest values with one value emptied; path is
// its dotted name.
func without(t *testing.T, path string) map[string]any {
	t.Helper()
	parts := strings.Split(path, ".")
	override := map[string]any{parts[len(parts)-1]: ""}
	for i := len(parts) - 2; i >= 0; i-- {
		override = map[string]any{parts[i]: override}
	}
	return render.Merge(plainValues(t), override)
}

// TestInstallFailsEarlyNamingTheValue: what only the user's IBM Cloud
// account can say has no default; rendering without it (as helm template
// and helm install do) fails with a message that names the value, instead
// of an install whose StorageClasses fail at the first PVC.
func TestInstallFailsEarlyNamingTheValue(t *testing.T) {
	chart := filepath.Join(repoRoot(t), render.ChartDir)
	if _, err := render.Chart(chart, nil); err == nil || !strings.Contains(err.Error(), "storageClasses.") {
		t.Errorf("the chart's defaults render (%v); they must ask for the account's values", err)
	}
	for _, tc := range []struct {
		values map[string]any
		want   []string
	}{
		{without(t, "storageClasses.serviceInstanceID"), []string{"storageClasses.serviceInstanceID is required", "storageClasses.bucketClasses=[]"}},
		{without(t, "storageClasses.prefix.bucketName"), []string{"storageClasses.prefix.bucketName is required", "storageClasses.prefix.enabled=false"}},
		{without(t, "storageClasses.volumeProfile.name"), []string{"storageClasses.volumeProfile: set exactly one of id, name and crn"}},
		{without(t, "controller.trustedProfile"), []string{"controller.trustedProfile is required", "controller.apiKeySecret.name"}},
	} {
		_, err := render.Chart(chart, tc.values)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("render error %v, want one containing %q", err, w)
			}
		}
	}
	// What each one is needed for can be turned off instead.
	for name, values := range map[string]map[string]any{
		"static and inline volumes only": {"storageClasses": map[string]any{"enabled": false}},
		"prefix class only, API key": {
			"controller":     map[string]any{"apiKeySecret": map[string]any{"name": "cos-key"}},
			"storageClasses": map[string]any{"bucketClasses": []any{}, "prefix": map[string]any{"bucketName": "shared"}, "volumeProfile": map[string]any{"id": "Profile-1", "name": ""}},
		},
	} {
		files, err := render.Chart(chart, values)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		objs := decodeFiles(t, files)
		if name == "static and inline volumes only" && len(objectsOf[*storagev1.StorageClass](objs)) != 0 {
			t.Errorf("%s: StorageClasses rendered", name)
		}
	}
}

// TestImagesAreTheOnesTheREADMELists: every image the chart runs is listed
// in README.md with the same tag, and every image README.md lists is run.
func TestImagesAreTheOnesTheREADMELists(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	// Table rows such as: | `registry.k8s.io/sig-storage/livenessprobe` | `v2.20.0` | ... |
	row := regexp.MustCompile("(?m)^\\|\\s*`([a-z0-9./-]+)`\\s*\\|\\s*`(v[0-9][^`]*)`")
	listed := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		listed[m[1]] = m[2]
	}
	if len(listed) < 3 {
		t.Fatalf("README.md lists %d sidecar images, want the table of images the chart runs", len(listed))
	}
	run := map[string]string{}
	for _, spec := range podSpecs(renderObjects(t, nil)) {
		for _, c := range spec.Containers {
			repo, tag, _ := strings.Cut(c.Image, ":")
			if repo == "cosmount" { // this repository's image, tagged with the chart's appVersion
				continue
			}
			run[repo] = tag
		}
	}
	for repo, tag := range run {
		if listed[repo] != tag {
			t.Errorf("the chart runs %s:%s, README.md lists %q", repo, tag, listed[repo])
		}
	}
	for repo, tag := range listed {
		if _, ok := run[repo]; !ok {
			t.Errorf("README.md lists %s:%s, which the chart does not run", repo, tag)
		}
	}
}

func podSpecs(objs []object) []corev1.PodSpec {
	var specs []corev1.PodSpec
	for _, ds := range objectsOf[*appsv1.DaemonSet](objs) {
		specs = append(specs, ds.Spec.Template.Spec)
	}
	for _, d := range objectsOf[*appsv1.Deployment](objs) {
		specs = append(specs, d.Spec.Template.Spec)
	}
	return specs
}

// TestProxyReachesEveryComponent: proxy values become the environment of
// the node plugin and the controller (they talk to IAM and COS) and of the
// mounter, which hands them to the servers (cmd/cosmount-csi's
// TestVolumeMetricsAndServerEnvironment shows a server's environment).
func TestProxyReachesEveryComponent(t *testing.T) {
	objs := renderObjects(t, map[string]any{
		"proxy":   map[string]any{"httpsProxy": "http://proxy.corp:3128", "noProxy": ".svc,10.0.0.0/8"},
		"mounter": map[string]any{"env": []any{map[string]any{"name": "SSL_CERT_FILE", "value": "/etc/ssl/corp.pem"}}},
	})
	want := map[string]string{"HTTPS_PROXY": "http://proxy.corp:3128", "https_proxy": "http://proxy.corp:3128", "NO_PROXY": ".svc,10.0.0.0/8", "no_proxy": ".svc,10.0.0.0/8"}
	for _, c := range []corev1.Container{
		container(t, named[*appsv1.DaemonSet](t, objs, "cosmount-node").Spec.Template.Spec, "cosmount-csi"),
		container(t, named[*appsv1.DaemonSet](t, objs, "cosmount-mounter").Spec.Template.Spec, "mounter"),
		container(t, named[*appsv1.Deployment](t, objs, "cosmount-controller").Spec.Template.Spec, "cosmount-csi"),
	} {
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		for k, v := range want {
			if env[k] != v {
				t.Errorf("%s: %s=%q, want %q", c.Name, k, env[k], v)
			}
		}
		if _, set := env["HTTP_PROXY"]; set {
			t.Errorf("%s: HTTP_PROXY set although proxy.httpProxy is empty", c.Name)
		}
		if c.Name == "mounter" && env["SSL_CERT_FILE"] != "/etc/ssl/corp.pem" {
			t.Errorf("mounter.env is lost next to the proxy: %+v", c.Env)
		}
	}
	// Without proxy values, no proxy variable at all.
	for _, spec := range podSpecs(renderObjects(t, nil)) {
		for _, c := range spec.Containers {
			for _, e := range c.Env {
				if strings.Contains(strings.ToUpper(e.Name), "PROXY") {
					t.Errorf("%s has %s without proxy values", c.Name, e.Name)
				}
			}
		}
	}
}

// TestControllerDisruptionBudget: a drain takes down at most one
// controller pod at a time, and the budget selects exactly the controller.
func TestControllerDisruptionBudget(t *testing.T) {
	objs := renderObjects(t, nil)
	pdb := named[*policyv1.PodDisruptionBudget](t, objs, "cosmount-controller")
	if pdb.Namespace != render.ReleaseNamespace || pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
		t.Errorf("budget %+v, want maxUnavailable 1 in %s", pdb.Spec, render.ReleaseNamespace)
	}
	sel := labels.SelectorFromSet(pdb.Spec.Selector.MatchLabels)
	for _, spec := range []struct {
		name   string
		labels map[string]string
	}{
		{"controller", named[*appsv1.Deployment](t, objs, "cosmount-controller").Spec.Template.Labels},
		{"node", named[*appsv1.DaemonSet](t, objs, "cosmount-node").Spec.Template.Labels},
		{"mounter", named[*appsv1.DaemonSet](t, objs, "cosmount-mounter").Spec.Template.Labels},
	} {
		if sel.Matches(labels.Set(spec.labels)) != (spec.name == "controller") {
			t.Errorf("the budget's selector %v and the %s pods: match %v", sel, spec.name, !(spec.name == "controller"))
		}
	}
	off := renderObjects(t, map[string]any{"controller": map[string]any{"podDisruptionBudget": map[string]any{"enabled": false}}})
	if n := len(objectsOf[*policyv1.PodDisruptionBudget](off)); n != 0 {
		t.Errorf("%d budgets with podDisruptionBudget.enabled=false", n)
	}
}

// TestOpenShiftSCC: behind openshift.scc.enabled, an SCC that allows what
// the node service account's pods ask for (the mounter privileged with host
// paths, the plugin as root with host paths), usable by that account only.
func TestOpenShiftSCC(t *testing.T) {
	if n := len(objectsOf[*securityContextConstraints](renderObjects(t, nil))); n != 0 {
		t.Fatalf("%d SCCs by default", n)
	}
	objs := renderObjects(t, map[string]any{"openshift": map[string]any{"scc": map[string]any{"enabled": true}}})
	scc := named[*securityContextConstraints](t, objs, "cosmount-node")
	if !scc.AllowPrivilegedContainer || !scc.AllowHostDirVolumePlugin || scc.RunAsUser.Type != "RunAsAny" || len(scc.Users) != 0 {
		t.Errorf("SCC %+v", scc)
	}
	for _, name := range []string{"cosmount-node", "cosmount-mounter"} {
		spec := named[*appsv1.DaemonSet](t, objs, name).Spec.Template.Spec
		if spec.ServiceAccountName != "cosmount-node" {
			t.Errorf("%s runs as %s, not the account the SCC is for", name, spec.ServiceAccountName)
		}
		for _, v := range spec.Volumes {
			kind := ""
			switch {
			case v.HostPath != nil:
				kind = "hostPath"
			case v.EmptyDir != nil:
				kind = "emptyDir"
			case v.Projected != nil:
				kind = "projected"
			default:
				t.Errorf("%s: volume %s of a kind this test does not know", name, v.Name)
			}
			if kind != "" && !slices.Contains(scc.Volumes, kind) {
				t.Errorf("%s uses a %s volume the SCC does not allow", name, kind)
			}
		}
	}
	role := named[*rbacv1.ClusterRole](t, objs, "cosmount-node-scc")
	if len(role.Rules) != 1 || !slices.Equal(role.Rules[0].Verbs, []string{"use"}) || !slices.Equal(role.Rules[0].ResourceNames, []string{"cosmount-node"}) {
		t.Errorf("SCC role %+v: want use of cosmount-node only", role.Rules)
	}
	rb := named[*rbacv1.RoleBinding](t, objs, "cosmount-node-scc")
	if len(rb.Subjects) != 1 || rb.Subjects[0].Name != "cosmount-node" || rb.RoleRef.Name != role.Name {
		t.Errorf("SCC binding %+v", rb)
	}
}

// TestServiceMonitor: behind metrics.serviceMonitor.enabled, a Service per
// component with metrics, each selecting exactly that component's pods and
// naming their metrics port, and a ServiceMonitor that selects those Services.
func TestServiceMonitor(t *testing.T) {
	if n := len(objectsOf[*monitoringv1.ServiceMonitor](renderObjects(t, nil))); n != 0 {
		t.Fatalf("%d ServiceMonitors by default", n)
	}
	monitor := map[string]any{"serviceMonitor": map[string]any{
		"enabled": true, "labels": map[string]any{"release": "kube-prometheus-stack"}}}
	// The mounter's metrics name volumes; they stay on its pod's loopback,
	// out of the ServiceMonitor, until mounterMetrics.exposed.
	for _, svc := range objectsOf[*corev1.Service](renderObjects(t, map[string]any{"metrics": monitor})) {
		if svc.Name == "cosmount-mounter-metrics" {
			t.Errorf("%s rendered without mounterMetrics.exposed", svc.Name)
		}
	}
	objs := renderObjects(t, map[string]any{"metrics": monitor, "mounterMetrics": map[string]any{"exposed": true}})
	sm := named[*monitoringv1.ServiceMonitor](t, objs, "cosmount")
	if sm.Labels["release"] != "kube-prometheus-stack" || len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" {
		t.Errorf("ServiceMonitor %+v", sm)
	}
	smSel := labels.SelectorFromSet(sm.Spec.Selector.MatchLabels)
	pods := map[string]corev1.PodTemplateSpec{
		"node":       named[*appsv1.DaemonSet](t, objs, "cosmount-node").Spec.Template,
		"mounter":    named[*appsv1.DaemonSet](t, objs, "cosmount-mounter").Spec.Template,
		"controller": named[*appsv1.Deployment](t, objs, "cosmount-controller").Spec.Template,
	}
	for component, tmpl := range pods {
		svc := named[*corev1.Service](t, objs, "cosmount-"+component+"-metrics")
		if !smSel.Matches(labels.Set(svc.Labels)) {
			t.Errorf("the ServiceMonitor does not select %s", svc.Name)
		}
		for other, o := range pods {
			if labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(o.Labels)) != (other == component) {
				t.Errorf("%s selects the %s pods: %v", svc.Name, other, other != component)
			}
		}
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].TargetPort.StrVal != "metrics" {
			t.Fatalf("%s ports %+v", svc.Name, svc.Spec.Ports)
		}
		found := false
		for _, c := range tmpl.Spec.Containers {
			for _, p := range c.Ports {
				found = found || (p.Name == "metrics" && p.ContainerPort == svc.Spec.Ports[0].Port)
			}
		}
		if !found {
			t.Errorf("no container of the %s pods serves metrics on port %d", component, svc.Spec.Ports[0].Port)
		}
	}
}

// TestNotesTellWhatToDoAfterAnUpgrade: helm prints the upgrade steps, the
// mounter's node-by-node procedure among them.
func TestNotesTellWhatToDoAfterAnUpgrade(t *testing.T) {
	notes, err := render.Notes(filepath.Join(repoRoot(t), render.ChartDir), plainValues(t), true)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"This was an upgrade (revision 2)",
		"rollout status daemonset/cosmount-node",
		"kubectl cordon NODE && kubectl drain NODE --ignore-daemonsets",
		"delete pod -l app.kubernetes.io/component=mounter --field-selector spec.nodeName=NODE",
		"kubectl uncordon NODE",
		"IBM Cloud: /var/data/kubelet",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES.txt after an upgrade lacks %q:\n%s", want, notes)
		}
	}
}
