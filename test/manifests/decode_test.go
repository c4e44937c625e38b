// Package manifests_test checks cosmount's deployment files: every YAML document under deploy/ decodes
// strictly into the Kubernetes API types, the Helm chart renders to exactly the plain manifests, and the
// objects say what the driver needs (CSIDriver token requests, a privileged node plugin with
// Bidirectional propagation, StorageClass parameters the driver understands, RBAC without wildcards).
package manifests_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	cosvolume "github.com/cosmount/cosmount/pkg/volume"
)

// object is one decoded YAML document.
type object struct {
	source string // file name and document index, for messages
	kind   string
	obj    any // pointer to the typed object
}

// newObject returns an empty typed object for a document's apiVersion and kind; deploy/ may only hold
// kinds listed here, so a typo in either is an error rather than an unchecked document.
func newObject(tm metav1.TypeMeta) (any, error) {
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "v1 PersistentVolume":
		return &corev1.PersistentVolume{}, nil
	case "v1 PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}, nil
	case "v1 Pod":
		return &corev1.Pod{}, nil
	case "v1 Secret":
		return &corev1.Secret{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "monitoring.coreos.com/v1 ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}, nil
	case "security.openshift.io/v1 SecurityContextConstraints":
		return &securityContextConstraints{}, nil
	case "apps/v1 DaemonSet":
		return &appsv1.DaemonSet{}, nil
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "storage.k8s.io/v1 CSIDriver":
		return &storagev1.CSIDriver{}, nil
	case "storage.k8s.io/v1 StorageClass":
		return &storagev1.StorageClass{}, nil
	case "rbac.authorization.k8s.io/v1 ClusterRole":
		return &rbacv1.ClusterRole{}, nil
	case "rbac.authorization.k8s.io/v1 ClusterRoleBinding":
		return &rbacv1.ClusterRoleBinding{}, nil
	case "rbac.authorization.k8s.io/v1 Role":
		return &rbacv1.Role{}, nil
	case "rbac.authorization.k8s.io/v1 RoleBinding":
		return &rbacv1.RoleBinding{}, nil
	}
	return nil, fmt.Errorf("unexpected apiVersion %q kind %q", tm.APIVersion, tm.Kind)
}

// decodeStrict splits a multi-document YAML stream and decodes each document strictly (unknown or
// duplicate fields are errors) into its API type. Documents holding only comments are skipped.
func decodeStrict(name string, data []byte) ([]object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []object
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		var probe map[string]any
		if err := yaml.Unmarshal(doc, &probe); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		if len(probe) == 0 {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		obj, err := newObject(tm)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("%s: document %d (%s): %w", name, i, tm.Kind, err)
		}
		out = append(out, object{source: fmt.Sprintf("%s#%d", name, i), kind: tm.Kind, obj: obj})
	}
}

// decodeFiles decodes a set of named files (as the renderer returns them) and checks each object.
func decodeFiles(t *testing.T, files map[string]string) []object {
	t.Helper()
	var all []object
	for name, body := range files {
		objs, err := decodeStrict(name, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, objs...)
	}
	for _, o := range all {
		if err := checkObject(o); err != nil {
			t.Errorf("%s: %v", o.source, err)
		}
	}
	return all
}

// checkObject finds the mistakes that strict decoding cannot: a mount of an undeclared volume, a probe
// naming a port its container does not declare, a selector that does not match its pod template.
func checkObject(o object) error {
	var spec *corev1.PodSpec
	switch v := o.obj.(type) {
	case *appsv1.DaemonSet:
		if err := checkSelector(v.Spec.Selector, v.Spec.Template.Labels); err != nil {
			return err
		}
		spec = &v.Spec.Template.Spec
	case *appsv1.Deployment:
		if err := checkSelector(v.Spec.Selector, v.Spec.Template.Labels); err != nil {
			return err
		}
		spec = &v.Spec.Template.Spec
	case *corev1.Pod:
		spec = &v.Spec
	default:
		return nil
	}
	return checkPodSpec(spec)
}

func checkSelector(sel *metav1.LabelSelector, labels map[string]string) error {
	if sel == nil || len(sel.MatchLabels) == 0 {
		return errors.New("no selector matchLabels")
	}
	for k, v := range sel.MatchLabels {
		if labels[k] != v {
			return fmt.Errorf("selector %s=%s does not match the pod template labels %v", k, v, labels)
		}
	}
	return nil
}

func checkPodSpec(spec *corev1.PodSpec) error {
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		if volumes[v.Name] {
			return fmt.Errorf("volume %q declared twice", v.Name)
		}
		volumes[v.Name] = true
	}
	names := map[string]bool{}
	for _, c := range spec.Containers {
		if names[c.Name] {
			return fmt.Errorf("container %q declared twice", c.Name)
		}
		names[c.Name] = true
		if c.Image == "" {
			return fmt.Errorf("container %q has no image", c.Name)
		}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				return fmt.Errorf("container %q mounts undeclared volume %q", c.Name, m.Name)
			}
		}
		ports := map[string]bool{}
		for _, p := range c.Ports {
			ports[p.Name] = true
		}
		for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
			if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.StrVal == "" {
				continue
			}
			if !ports[p.HTTPGet.Port.StrVal] {
				return fmt.Errorf("container %q probes port %q, which it does not declare", c.Name, p.HTTPGet.Port.StrVal)
			}
		}
	}
	return nil
}

// repoRoot finds the module root from the test's working directory (test/manifests).
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// driverNames reads the volume attribute keys from pkg/driver/params.go, where they are unexported
// constants (parsing the source keeps this test in step with the driver without widening its API), and
// the mount option names a volume may use from pkg/volume's grammar.
func driverNames(t *testing.T, root string) (attributes, mountOptions map[string]bool) {
	t.Helper()
	path := filepath.Join(root, "pkg", "driver", "params.go")
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	attributes, mountOptions = map[string]bool{}, map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		switch v := n.(type) {
		case *ast.ValueSpec:
			for i, id := range v.Names {
				if !strings.HasPrefix(id.Name, "attr") || i >= len(v.Values) {
					continue
				}
				if lit, ok := v.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					s, err := strconv.Unquote(lit.Value)
					if err == nil {
						attributes[s] = true
					}
				}
			}
		}
		return true
	})
	// The mount options a volume may set are pkg/volume's grammar.
	for _, name := range cosvolume.OptionNames(cosvolume.ScopeVolume) {
		mountOptions[name] = true
	}
	if len(attributes) < 10 || len(mountOptions) < 4 {
		t.Fatalf("%s: found only attributes %v and mount options %v; has the driver renamed them?", path, attributes, mountOptions)
	}
	return attributes, mountOptions
}

// pluginFlags reads the names of cosmount-csi's flags from the fs.XxxVar calls in pkg/driver/driver.go
// (Options.AddFlags), plus klog's -v that cmd/cosmount-csi adds, so the manifests can only pass flags
// the binary accepts. Parsing the source keeps this test independent of pkg/driver's build.
func pluginFlags(t *testing.T, root string) map[string]bool {
	t.Helper()
	flags := map[string]bool{"v": true}
	// The CSI plugin's flags, and the mounter mode's.
	for _, rel := range []string{"pkg/driver/driver.go", "cmd/cosmount-csi/mounter.go"} {
		path := filepath.Join(root, rel)
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
		if err != nil {
			t.Fatalf("parse %s: %v", path, err)
		}
		n := len(flags)
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) < 2 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !strings.HasSuffix(sel.Sel.Name, "Var") {
				return true
			}
			if lit, ok := call.Args[1].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil {
					flags[s] = true
				}
			}
			return true
		})
		if len(flags)-n < 5 {
			t.Fatalf("%s: found only flags %v; have the flags moved?", path, flags)
		}
	}
	return flags
}

// checkPluginArgs fails on a cosmount-csi argument that is not --name=value with a known name.
func checkPluginArgs(t *testing.T, where string, args []string, known map[string]bool) {
	t.Helper()
	for _, a := range args {
		name, _, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok || !known[name] {
			t.Errorf("%s: argument %q is not a known cosmount-csi --flag=value", where, a)
		}
	}
}

// securityContextConstraints mirrors the fields of OpenShift's security.openshift.io/v1
// SecurityContextConstraints (github.com/openshift/api/security/v1) that the chart sets; the module proxy
// serves no usable version of that module. Strict decoding then refuses any field the chart might
// misspell or that OpenShift does not have.
type securityContextConstraints struct {
	metav1.TypeMeta          `json:",inline"`
	metav1.ObjectMeta        `json:"metadata,omitempty"`
	Priority                 *int32   `json:"priority"`
	AllowPrivilegedContainer bool     `json:"allowPrivilegedContainer"`
	DefaultAddCapabilities   []string `json:"defaultAddCapabilities"`
	RequiredDropCapabilities []string `json:"requiredDropCapabilities"`
	AllowedCapabilities      []string `json:"allowedCapabilities"`
	AllowHostDirVolumePlugin bool     `json:"allowHostDirVolumePlugin"`
	Volumes                  []string `json:"volumes"`
	AllowHostNetwork         bool     `json:"allowHostNetwork"`
	AllowHostPorts           bool     `json:"allowHostPorts"`
	AllowHostPID             bool     `json:"allowHostPID"`
	AllowHostIPC             bool     `json:"allowHostIPC"`
	AllowPrivilegeEscalation *bool    `json:"allowPrivilegeEscalation,omitempty"`
	SELinuxContext           struct {
		Type string `json:"type,omitempty"`
	} `json:"seLinuxContext,omitempty"`
	RunAsUser struct {
		Type string `json:"type,omitempty"`
	} `json:"runAsUser,omitempty"`
	SupplementalGroups struct {
		Type string `json:"type,omitempty"`
	} `json:"supplementalGroups,omitempty"`
	FSGroup struct {
		Type string `json:"type,omitempty"`
	} `json:"fsGroup,omitempty"`
	ReadOnlyRootFilesystem bool     `json:"readOnlyRootFilesystem"`
	Users                  []string `json:"users"`
	Groups                 []string `json:"groups"`
}
