//go:build cluster

package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/cosmount/cosmount/internal/testproc"
)

// DriverName is the CSI driver the manifests register.
const DriverName = "cosmount.csi.io"

// upstreamKubeletDir is the kubelet directory the manifests assume.
const upstreamKubeletDir = "/var/lib/kubelet"

// Manifests are the decoded objects of deploy/kubernetes, after the
// changes this machine needs (see Adapt).
type Manifests struct {
	Objects      []runtime.Object
	Images       ImageNames
	ControllerSA string // service account of the controller Deployment
	Deviations   []string
}

// LoadManifests decodes every YAML file in dir. The kubelet directory is
// replaced textually first: it appears in host paths, mount paths, args
// and probe commands alike, and they must all agree.
func LoadManifests(dir, kubeletDir string) (*Manifests, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no manifests in %s", dir)
	}
	sort.Strings(files)
	m := &Manifests{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		b = bytes.ReplaceAll(b, []byte(upstreamKubeletDir), []byte(kubeletDir))
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if d, ok := obj.(*appsv1.Deployment); ok {
				m.ControllerSA = d.Spec.Template.Spec.ServiceAccountName
			}
			m.Objects = append(m.Objects, obj)
		}
	}
	// Identities and permissions before the workloads that use them.
	sort.SliceStable(m.Objects, func(i, j int) bool { return applyRank(m.Objects[i]) < applyRank(m.Objects[j]) })
	if m.ControllerSA == "" {
		return nil, fmt.Errorf("%s: no controller Deployment with a service account", dir)
	}
	m.Deviations = append(m.Deviations, "kubelet directory "+upstreamKubeletDir+" -> "+kubeletDir+" (the throwaway directory)")
	return m, nil
}

func applyRank(obj runtime.Object) int {
	switch obj.(type) {
	case *corev1.ServiceAccount, *corev1.Secret, *corev1.ConfigMap:
		return 0
	case *rbacv1.ClusterRole, *rbacv1.Role:
		return 1
	case *rbacv1.ClusterRoleBinding, *rbacv1.RoleBinding:
		return 2
	case *storagev1.CSIDriver, *storagev1.StorageClass:
		return 3
	default:
		return 4
	}
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}

// Endpoints are what the manifests' IBM Cloud URLs become.
type Endpoints struct {
	IAM, COS  string
	APIServer string // https://127.0.0.1:PORT
	StateDir  string // host directory for the node plugin's state
}

// Adapt changes the objects for this machine and records each change in
// Deviations, so the suite's log says exactly how far the deployment
// differs from deploy/kubernetes.
func (m *Manifests) Adapt(ep Endpoints) error {
	host, port, ok := strings.Cut(strings.TrimPrefix(ep.APIServer, "https://"), ":")
	if !ok {
		return fmt.Errorf("API server URL %q has no port", ep.APIServer)
	}
	if _, err := strconv.Atoi(port); err != nil {
		return err
	}
	for _, obj := range m.Objects {
		switch o := obj.(type) {
		case *appsv1.DaemonSet:
			if err := m.adaptPod(&o.Spec.Template.Spec, host, port, ep); err != nil {
				return err
			}
		case *appsv1.Deployment:
			if err := m.adaptPod(&o.Spec.Template.Spec, host, port, ep); err != nil {
				return err
			}
		case *storagev1.CSIDriver:
			// What an admin sets with inlineVolumes.enabled=true: the inline
			// scenarios need it (TestInlineVolumesDisabled takes it away).
			if !slices.Contains(o.Spec.VolumeLifecycleModes, storagev1.VolumeLifecycleEphemeral) {
				o.Spec.VolumeLifecycleModes = append(o.Spec.VolumeLifecycleModes, storagev1.VolumeLifecycleEphemeral)
			}
		case *storagev1.StorageClass:
			for k := range o.Parameters {
				switch k {
				case "cosEndpoint":
					o.Parameters[k] = ep.COS
				case "iamEndpoint":
					o.Parameters[k] = ep.IAM
				}
			}
			if o.Parameters["provisioning"] == "bucket" {
				// What an installation sets in values.yaml (storageClasses.serviceInstanceID); the plain
				// manifests carry a stand-in.
				o.Parameters["serviceInstanceID"] = ServiceInstance
			}
		}
	}
	m.Deviations = append(m.Deviations,
		"StorageClass cosEndpoint/iamEndpoint -> the emulator; bucket classes get serviceInstanceID "+ServiceInstance,
		"pods: hostNetwork (no CNI on this machine, the node stays NotReady), imagePullPolicy Never (images imported, no registry)",
		"pods: KUBERNETES_SERVICE_HOST/PORT = "+host+":"+port+" (no kube-proxy: the kubernetes Service IP routes nowhere)",
		"--metrics-address and --mounter-metrics-address :PORT -> 127.0.0.1:PORT and --iam-endpoint -> the emulator",
		"--cos-endpoint and --allowed-cos-endpoints -> the emulator, --allow-insecure-http=true (the emulator is plain http on loopback)",
		"inline volumes on (inlineVolumes.enabled=true: --inline-volumes=true and the CSIDriver's Ephemeral mode)",
		"container ports (health 9808/9809, metrics 9810/9811/9812) -> free ports, with their --http-endpoint/--metrics-address flags (host network: one port space for all pods)",
		"the mounter's state and socket hostPaths (/run/cosmount/...) -> below "+ep.StateDir,
		"sidecar images are local builds: csi-provisioner v6.4.0 under the manifest's image name; node-driver-registrar and livenessprobe are the suite's stand-in (test/cluster/tools/sidecars)",
	)
	return nil
}

func (m *Manifests) adaptPod(spec *corev1.PodSpec, host, port string, ep Endpoints) error {
	spec.HostNetwork = true
	// On the host network every container port is a host port: the node
	// and controller pods' health ports (both 9808) would clash, and a
	// fixed port may be taken on a shared machine. Each gets a free one;
	// probes name their ports, so only the flags that carry the number
	// change with it.
	remap := map[string]string{}
	for _, list := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range list {
			for j := range list[i].Ports {
				p := &list[i].Ports[j]
				free, err := freePort()
				if err != nil {
					return err
				}
				remap[strconv.Itoa(int(p.ContainerPort))] = strconv.Itoa(free)
				p.ContainerPort = int32(free)
				if p.HostPort != 0 {
					p.HostPort = int32(free)
				}
			}
		}
	}
	spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
	for i := range spec.Volumes {
		hp := spec.Volumes[i].HostPath
		if hp == nil || strings.HasPrefix(hp.Path, "/dev/") || strings.HasPrefix(hp.Path, filepath.Dir(ep.StateDir)) {
			continue
		}
		if !strings.HasPrefix(hp.Path, "/var/") && !strings.HasPrefix(hp.Path, "/run/") {
			continue
		}
		// Anything else on the host (the plugin's state directory) goes
		// into the throwaway directory too.
		hp.Path = filepath.Join(ep.StateDir, hp.Path)
	}
	for _, list := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range list {
			c := &list[i]
			c.ImagePullPolicy = corev1.PullNever
			c.Env = append(c.Env,
				corev1.EnvVar{Name: "KUBERNETES_SERVICE_HOST", Value: host},
				corev1.EnvVar{Name: "KUBERNETES_SERVICE_PORT", Value: port})
			for j, a := range c.Args {
				switch {
				case strings.HasPrefix(a, "--iam-endpoint="):
					c.Args[j] = "--iam-endpoint=" + ep.IAM
					// The emulator is plain http: allowed explicitly, as the
					// chart's endpoints.allowInsecureHTTP does.
					c.Args = append(c.Args, "--allow-insecure-http=true")
				case strings.HasPrefix(a, "--cos-endpoint="):
					c.Args[j] = "--cos-endpoint=" + ep.COS
				case strings.HasPrefix(a, "--allowed-cos-endpoints="):
					c.Args[j] = "--allowed-cos-endpoints=" + ep.COS
				case a == "--inline-volumes=false":
					c.Args[j] = "--inline-volumes=true"
				case strings.HasPrefix(a, "--metrics-address=:"):
					c.Args[j] = "--metrics-address=127.0.0.1:" + strings.TrimPrefix(a, "--metrics-address=:")
				case strings.HasPrefix(a, "--mounter-metrics-address=:"):
					c.Args[j] = "--mounter-metrics-address=127.0.0.1:" + strings.TrimPrefix(a, "--mounter-metrics-address=:")
				}
				for old, repl := range remap {
					for _, sep := range []string{"=", ":"} {
						if strings.HasSuffix(c.Args[j], sep+old) {
							c.Args[j] = strings.TrimSuffix(c.Args[j], old) + repl
						}
					}
				}
			}
			name := c.Image
			if k := strings.LastIndex(name, "/"); k >= 0 {
				name = name[k+1:]
			}
			name, _, _ = strings.Cut(name, ":")
			switch name {
			case "csi-provisioner":
				m.Images.Provisioner = appendUnique(m.Images.Provisioner, c.Image)
			case "csi-node-driver-registrar":
				m.Images.Registrar = appendUnique(m.Images.Registrar, c.Image)
			case "livenessprobe":
				m.Images.LivenessProbe = appendUnique(m.Images.LivenessProbe, c.Image)
			default:
				m.Images.Plugin = appendUnique(m.Images.Plugin, c.Image)
			}
		}
	}
	return nil
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// Apply creates every object, in file order (RBAC before workloads).
func (c *Cluster) Apply(ctx context.Context, objs []runtime.Object) error {
	for _, obj := range objs {
		var err error
		var what string
		cs := c.Client
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			what, err = create(ctx, "ServiceAccount", o, cs.CoreV1().ServiceAccounts(o.Namespace).Create)
		case *rbacv1.ClusterRole:
			what, err = create(ctx, "ClusterRole", o, cs.RbacV1().ClusterRoles().Create)
		case *rbacv1.ClusterRoleBinding:
			what, err = create(ctx, "ClusterRoleBinding", o, cs.RbacV1().ClusterRoleBindings().Create)
		case *rbacv1.Role:
			what, err = create(ctx, "Role", o, cs.RbacV1().Roles(o.Namespace).Create)
		case *rbacv1.RoleBinding:
			what, err = create(ctx, "RoleBinding", o, cs.RbacV1().RoleBindings(o.Namespace).Create)
		case *storagev1.CSIDriver:
			what, err = create(ctx, "CSIDriver", o, cs.StorageV1().CSIDrivers().Create)
		case *storagev1.StorageClass:
			what, err = create(ctx, "StorageClass", o, cs.StorageV1().StorageClasses().Create)
		case *appsv1.DaemonSet:
			what, err = create(ctx, "DaemonSet", o, cs.AppsV1().DaemonSets(o.Namespace).Create)
		case *appsv1.Deployment:
			what, err = create(ctx, "Deployment", o, cs.AppsV1().Deployments(o.Namespace).Create)
		case *corev1.Secret:
			what, err = create(ctx, "Secret", o, cs.CoreV1().Secrets(o.Namespace).Create)
		case *corev1.ConfigMap:
			what, err = create(ctx, "ConfigMap", o, cs.CoreV1().ConfigMaps(o.Namespace).Create)
		case *policyv1.PodDisruptionBudget:
			what, err = create(ctx, "PodDisruptionBudget", o, cs.PolicyV1().PodDisruptionBudgets(o.Namespace).Create)
		default:
			return fmt.Errorf("apply: unsupported object %T in deploy manifests", obj)
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %s: %w", what, err)
		}
		logStep("created %s", what)
	}
	return nil
}

// create calls one typed client's Create for obj and names the object as
// "Kind name" for the log and errors.
func create[T metav1.Object](ctx context.Context, kind string, obj T, fn func(context.Context, T, metav1.CreateOptions) (T, error)) (string, error) {
	_, err := fn(ctx, obj, metav1.CreateOptions{})
	return kind + " " + obj.GetName(), err
}

// WaitPluginReady waits until kubelet has registered the driver on the
// node (CSINode lists it) and the controller's containers all run.
func (c *Cluster) WaitPluginReady(ctx context.Context) error {
	err := waitFor(ctx, "CSINode lists "+DriverName+" (registration through plugins_registry)", 5*time.Minute, []*testproc.Process{c.kubelet}, func(ctx context.Context) error {
		n, err := c.Client.StorageV1().CSINodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, d := range n.Spec.Drivers {
			if d.Name == DriverName {
				return nil
			}
		}
		return fmt.Errorf("not yet: %s", c.podSummary(ctx, "kube-system"))
	})
	if err != nil {
		return err
	}
	logStep("kubelet registered %s on %s", DriverName, NodeName)
	err = waitFor(ctx, "controller pod ready", 5*time.Minute, []*testproc.Process{c.kubelet}, func(ctx context.Context) error {
		pods, err := c.Client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=controller"})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			if podReady(&p) {
				return nil
			}
		}
		return fmt.Errorf("not yet: %s", c.podSummary(ctx, "kube-system"))
	})
	if err != nil {
		return err
	}
	logStep("controller pod (cosmount-csi + csi-provisioner) ready")
	err = waitFor(ctx, "mounter pod ready", 5*time.Minute, []*testproc.Process{c.kubelet}, func(ctx context.Context) error {
		pods, err := c.Client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=mounter"})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			if podReady(&p) {
				return nil
			}
		}
		return fmt.Errorf("not yet: %s", c.podSummary(ctx, "kube-system"))
	})
	if err == nil {
		logStep("mounter pod ready")
	}
	return err
}

func podReady(p *corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// podSummary is one line per pod of ns with its phase and container
// states, for progress and failure messages.
func (c *Cluster) podSummary(ctx context.Context, ns string) string {
	pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, p := range pods.Items {
		s := p.Name + "=" + string(p.Status.Phase)
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodScheduled && cond.Status != corev1.ConditionTrue {
				s += fmt.Sprintf(" unscheduled(%s: %s)", cond.Reason, cond.Message)
			}
		}
		for _, cs := range p.Status.ContainerStatuses {
			switch {
			case cs.State.Waiting != nil:
				s += fmt.Sprintf(" %s:waiting(%s %s)", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message)
			case cs.State.Terminated != nil:
				s += fmt.Sprintf(" %s:terminated(%s, exit %d)", cs.Name, cs.State.Terminated.Reason, cs.State.Terminated.ExitCode)
			case cs.State.Running != nil:
				s += fmt.Sprintf(" %s:running(restarts %d)", cs.Name, cs.RestartCount)
			}
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "no pods in " + ns
	}
	return strings.Join(parts, "; ")
}
