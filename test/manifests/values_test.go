package manifests_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"

	"github.com/cosmount/cosmount/test/manifests/render"
)

// TestChartValues renders the chart with values other than the defaults, so that the template branches
// the plain manifests do not show still produce objects that decode strictly and say what was asked.
func TestChartValues(t *testing.T) {
	tests := []struct {
		name   string
		values map[string]any
		check  func(t *testing.T, objs []object)
	}{{
		name:   "host network",
		values: map[string]any{"node": map[string]any{"hostNetwork": true, "metricsPort": 0}},
		check: func(t *testing.T, objs []object) {
			spec := named[*appsv1.DaemonSet](t, objs, "cosmount-node").Spec.Template.Spec
			if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
				t.Errorf("hostNetwork %v dnsPolicy %q", spec.HostNetwork, spec.DNSPolicy)
			}
			for _, a := range container(t, spec, "cosmount-csi").Args {
				if strings.HasPrefix(a, "--metrics-address") {
					t.Errorf("metricsPort 0 still passes %s", a)
				}
			}
		},
	}, {
		name: "inline volumes, plain http and exposed mounter metrics",
		values: map[string]any{
			"inlineVolumes":  map[string]any{"enabled": true, "allowedAttributes": []any{"bucketName", "trustedProfileName"}},
			"endpoints":      map[string]any{"allowInsecureHTTP": true, "cosDefault": ""},
			"mounterMetrics": map[string]any{"exposed": true},
			"mounter":        map[string]any{"tempDir": "/scratch"},
		},
		check: func(t *testing.T, objs []object) {
			modes := named[*storagev1.CSIDriver](t, objs, "cosmount.csi.io").Spec.VolumeLifecycleModes
			if !slices.Contains(modes, storagev1.VolumeLifecycleEphemeral) {
				t.Errorf("volumeLifecycleModes %v lack Ephemeral", modes)
			}
			args := container(t, named[*appsv1.DaemonSet](t, objs, "cosmount-node").Spec.Template.Spec, "cosmount-csi").Args
			for _, want := range []string{"--inline-volumes=true", "--inline-volume-attributes=bucketName,trustedProfileName", "--allow-insecure-http=true"} {
				if !slices.Contains(args, want) {
					t.Errorf("node args %v lack %s", args, want)
				}
			}
			for _, a := range args {
				if strings.HasPrefix(a, "--cos-endpoint") {
					t.Errorf("an empty endpoints.cosDefault still passes %s", a)
				}
			}
			spec := named[*appsv1.DaemonSet](t, objs, "cosmount-mounter").Spec.Template.Spec
			m := container(t, spec, "mounter")
			if !slices.Contains(m.Args, "--mounter-metrics-address=:9812") || len(m.Ports) != 1 {
				t.Errorf("exposed mounter metrics: args %v ports %v", m.Args, m.Ports)
			}
			if !slices.Contains(m.Args, "--temp-dir=/scratch") {
				t.Errorf("mounter.tempDir is not passed: %v", m.Args)
			}
			for _, v := range spec.Volumes {
				if v.Name == "temp" {
					t.Error("mounter.tempDir is set, yet the chart adds its own temp volume")
				}
			}
		},
	}, {
		name:   "read cache in an emptyDir",
		values: map[string]any{"readCache": map[string]any{"enabled": true, "sizeLimit": "100Gi"}},
		check: func(t *testing.T, objs []object) {
			spec := named[*appsv1.DaemonSet](t, objs, "cosmount-mounter").Spec.Template.Spec
			checkReadCache(t, spec, "/var/cache/cosmount")
			v := volumeNamed(t, spec, "read-cache")
			if v.EmptyDir == nil || v.EmptyDir.SizeLimit == nil || v.EmptyDir.SizeLimit.String() != "100Gi" {
				t.Errorf("read-cache volume %+v, want an emptyDir of 100Gi", v.VolumeSource)
			}
		},
	}, {
		name:   "read cache on a host directory",
		values: map[string]any{"readCache": map[string]any{"enabled": true, "hostPath": "/mnt/nvme/cosmount", "mountPath": "/cache"}},
		check: func(t *testing.T, objs []object) {
			spec := named[*appsv1.DaemonSet](t, objs, "cosmount-mounter").Spec.Template.Spec
			checkReadCache(t, spec, "/cache")
			v := volumeNamed(t, spec, "read-cache")
			if v.HostPath == nil || v.HostPath.Path != "/mnt/nvme/cosmount" || v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectoryOrCreate {
				t.Errorf("read-cache volume %+v, want hostPath /mnt/nvme/cosmount", v.VolumeSource)
			}
		},
	}, {
		name: "controller with an API key",
		values: map[string]any{"controller": map[string]any{
			"trustedProfile": "", "apiKeySecret": map[string]any{"name": "cos-key", "namespace": "secrets"},
		}},
		check: func(t *testing.T, objs []object) {
			spec := named[*appsv1.Deployment](t, objs, "cosmount-controller").Spec.Template.Spec
			for _, v := range spec.Volumes {
				if v.Name == "iam-token" {
					t.Error("no trusted profile, yet the controller mounts a token")
				}
			}
			for _, a := range container(t, spec, "cosmount-csi").Args {
				if strings.HasPrefix(a, "--controller-") {
					t.Errorf("unexpected controller arg %s", a)
				}
			}
			for _, sc := range objectsOf[*storagev1.StorageClass](objs) {
				if sc.Parameters["csi.storage.k8s.io/provisioner-secret-name"] != "cos-key" ||
					sc.Parameters["csi.storage.k8s.io/provisioner-secret-namespace"] != "secrets" {
					t.Errorf("%s does not name the provisioner secret: %v", sc.Name, sc.Parameters)
				}
			}
		},
	}, {
		name: "token in secrets, other kubelet dir, profile by ID",
		values: map[string]any{
			"podToken":       map[string]any{"inSecrets": true},
			"kubeletDir":     "/var/data/kubelet/",
			"storageClasses": map[string]any{"volumeProfile": map[string]any{"name": "", "id": "Profile-1234"}, "defaultClass": "smart"},
		},
		check: func(t *testing.T, objs []object) {
			d := named[*storagev1.CSIDriver](t, objs, driverName)
			if d.Spec.ServiceAccountTokenInSecrets == nil || !*d.Spec.ServiceAccountTokenInSecrets {
				t.Error("serviceAccountTokenInSecrets not set")
			}
			mspec := named[*appsv1.DaemonSet](t, objs, "cosmount-mounter").Spec.Template.Spec
			if _, ok := mountAt(container(t, mspec, "mounter"), "/var/data/kubelet"); !ok {
				t.Error("the kubelet dir must be mounted in the mounter at its host path")
			}
			spec := named[*appsv1.DaemonSet](t, objs, "cosmount-node").Spec.Template.Spec
			reg := container(t, spec, "node-driver-registrar")
			if !slices.Contains(reg.Args, "--kubelet-registration-path=/var/data/kubelet/plugins/cosmount.csi.io/csi.sock") {
				t.Errorf("registrar args %v", reg.Args)
			}
			for _, sc := range objectsOf[*storagev1.StorageClass](objs) {
				if sc.Parameters["trustedProfileID"] != "Profile-1234" || sc.Parameters["trustedProfileName"] != "" {
					t.Errorf("%s profile parameters %v", sc.Name, sc.Parameters)
				}
				def := sc.Annotations["storageclass.kubernetes.io/is-default-class"] == "true"
				if def != (sc.Name == "cosmount-smart") {
					t.Errorf("%s default-class annotation %v", sc.Name, def)
				}
			}
		},
	}, {
		name:   "no StorageClasses, no leader election",
		values: map[string]any{"storageClasses": map[string]any{"enabled": false}, "controller": map[string]any{"leaderElection": false}},
		check: func(t *testing.T, objs []object) {
			if n := len(objectsOf[*storagev1.StorageClass](objs)); n != 0 {
				t.Errorf("%d StorageClasses rendered", n)
			}
			if len(objectsOf[*rbacv1.Role](objs)) != 0 {
				t.Error("leader-election Role rendered without leader election")
			}
			prov := container(t, named[*appsv1.Deployment](t, objs, "cosmount-controller").Spec.Template.Spec, "csi-provisioner")
			if slices.Contains(prov.Args, "--leader-election") {
				t.Error("provisioner still elects a leader")
			}
		},
	}, {
		name:   "service instance for new buckets",
		values: map[string]any{"storageClasses": map[string]any{"serviceInstanceID": "d6f04d83-6c4f-4a62-a165-696756d63903"}},
		check: func(t *testing.T, objs []object) {
			for _, sc := range objectsOf[*storagev1.StorageClass](objs) {
				want := "d6f04d83-6c4f-4a62-a165-696756d63903"
				if sc.Parameters["provisioning"] == "prefix" {
					want = ""
				}
				if sc.Parameters["serviceInstanceID"] != want {
					t.Errorf("%s serviceInstanceID %q, want %q", sc.Name, sc.Parameters["serviceInstanceID"], want)
				}
			}
		},
	}}
	flags := pluginFlags(t, repoRoot(t))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := renderObjects(t, tc.values)
			checkAllPluginArgs(t, objs, flags)
			tc.check(t, objs)
		})
	}
}

// checkAllPluginArgs checks the arguments of every cosmount-csi container in objs.
func checkAllPluginArgs(t *testing.T, objs []object, flags map[string]bool) {
	t.Helper()
	var specs []corev1.PodSpec
	for _, ds := range objectsOf[*appsv1.DaemonSet](objs) {
		specs = append(specs, ds.Spec.Template.Spec)
	}
	for _, d := range objectsOf[*appsv1.Deployment](objs) {
		specs = append(specs, d.Spec.Template.Spec)
	}
	if len(specs) != 3 {
		t.Fatalf("%d workloads rendered, want the node and mounter DaemonSets and the controller Deployment", len(specs))
	}
	for _, spec := range specs {
		name := "cosmount-csi"
		if spec.Containers[0].Name == "mounter" {
			name = "mounter"
		}
		c := container(t, spec, name)
		if len(c.Command) != 1 || c.Command[0] != "/usr/local/bin/cosmount-csi" {
			t.Errorf("command %v", c.Command)
		}
		checkPluginArgs(t, "cosmount-csi", c.Args, flags)
	}
}

// TestChartRefusesBadValues: values that would give volumes the driver rejects fail the render instead.
func TestChartRefusesBadValues(t *testing.T) {
	tests := []struct {
		name    string
		values  map[string]any
		message string
	}{
		{"two volume profiles", map[string]any{"storageClasses": map[string]any{"volumeProfile": map[string]any{"id": "Profile-1"}}}, "exactly one of id, name and crn"},
		{"no volume profile", map[string]any{"storageClasses": map[string]any{"volumeProfile": map[string]any{"name": ""}}}, "exactly one of id, name and crn"},
		{"prefix class without bucket", map[string]any{"storageClasses": map[string]any{"prefix": map[string]any{"bucketName": ""}}}, "bucketName is required"},
		{"token lives too long", map[string]any{"podToken": map[string]any{"expirationSeconds": 7200}}, "/podToken/expirationSeconds"},
		{"not a storage class", map[string]any{"storageClasses": map[string]any{"bucketClasses": []any{"standard", "premium"}}}, "/storageClasses/bucketClasses/1"},
		{"service instance that is neither GUID nor CRN", map[string]any{"storageClasses": map[string]any{"serviceInstanceID": "my-instance"}}, "/storageClasses/serviceInstanceID"},
		{"relative kubelet dir", map[string]any{"kubeletDir": "var/lib/kubelet"}, "/kubeletDir"},
		{"bad reclaim policy", map[string]any{"storageClasses": map[string]any{"reclaimPolicy": "Keep"}}, "/storageClasses/reclaimPolicy"},
		{"port out of range", map[string]any{"node": map[string]any{"healthPort": 70000}}, "/node/healthPort"},
		{"relative read-cache path", map[string]any{"readCache": map[string]any{"enabled": true, "mountPath": "cache"}}, "/readCache/mountPath"},
		{"read-cache limit that is not a quantity", map[string]any{"readCache": map[string]any{"sizeLimit": "lots"}}, "/readCache/sizeLimit"},
		{"fractional temp limit", map[string]any{"tempSpace": map[string]any{"perVolumeLimit": "1.5Gi"}}, "/tempSpace/perVolumeLimit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render.Chart(filepath.Join(repoRoot(t), render.ChartDir), render.Merge(plainValues(t), tc.values))
			if err == nil || !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("render error %v, want one containing %q", err, tc.message)
			}
		})
	}
}

// TestExamples checks that the examples tell the seed's story with attributes the driver accepts.
func TestExamples(t *testing.T) {
	root := repoRoot(t)
	attrs, mountOpts := driverNames(t, root)
	load := func(name string) []object {
		data, err := os.ReadFile(filepath.Join(root, "deploy", "examples", name))
		if err != nil {
			t.Fatal(err)
		}
		return decodeFiles(t, map[string]string{name: string(data)})
	}

	static := load("static-pv.yaml")
	pv := named[*corev1.PersistentVolume](t, static, "hello-bucket")
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != driverName {
		t.Fatalf("PV source %+v", pv.Spec.PersistentVolumeSource)
	}
	for _, k := range []string{"bucketName", "trustedProfileID", "cosEndpoint", "iamEndpoint"} {
		if pv.Spec.CSI.VolumeAttributes[k] == "" {
			t.Errorf("static PV lacks %s", k)
		}
	}
	checkAttributes(t, "static PV", pv.Spec.CSI.VolumeAttributes, attrs)
	checkMountOptions(t, "static PV", pv.Spec.MountOptions, mountOpts)
	pvc := named[*corev1.PersistentVolumeClaim](t, static, "hello-data")
	if pvc.Spec.VolumeName != pv.Name || pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "" {
		t.Errorf("the claim must bind the static PV: %+v", pvc.Spec)
	}
	pod := named[*corev1.Pod](t, static, "hello-writer")
	cmd := strings.Join(pod.Spec.Containers[0].Command, " ")
	if cmd != "sh -c echo hello world > /data/hello.txt && sleep 3600" {
		t.Errorf("pod command %q", cmd)
	}
	if pod.Spec.ServiceAccountName == "" || pod.Spec.Volumes[0].PersistentVolumeClaim.ClaimName != pvc.Name {
		t.Errorf("pod must run as its own service account with the claim mounted: %+v", pod.Spec)
	}
	named[*corev1.ServiceAccount](t, static, pod.Spec.ServiceAccountName)

	classes := map[string]bool{}
	for _, sc := range objectsOf[*storagev1.StorageClass](renderObjects(t, nil)) {
		classes[sc.Name] = true
	}
	dyn := named[*corev1.PersistentVolumeClaim](t, load("dynamic-pvc.yaml"), "reports")
	if dyn.Spec.StorageClassName == nil || *dyn.Spec.StorageClassName != "cosmount-smart" || !classes[*dyn.Spec.StorageClassName] {
		t.Errorf("dynamic claim's class %v is not the chart's cosmount-smart", dyn.Spec.StorageClassName)
	}

	inline := named[*corev1.Pod](t, load("inline-volume.yaml"), "dataset-reader")
	var found bool
	for _, v := range inline.Spec.Volumes {
		if v.CSI != nil && v.CSI.Driver == driverName {
			found = true
			checkAttributes(t, "inline volume", v.CSI.VolumeAttributes, attrs)
		}
	}
	if !found {
		t.Error("inline-volume.yaml has no cosmount CSI volume")
	}
}

// checkMountOptions applies the driver's mount flag grammar: name=value for the options it lists, or
// one of the bare flags it accepts; '-' and '_' are the same in names.
func checkMountOptions(t *testing.T, where string, opts []string, known map[string]bool) {
	t.Helper()
	for _, o := range opts {
		name, _, hasValue := strings.Cut(o, "=")
		name = strings.ReplaceAll(name, "-", "_")
		bare := name == "ro" || name == "rw" || name == "allow_other"
		if (hasValue && !known[name]) || (!hasValue && !bare) {
			t.Errorf("%s: mount option %q is unknown to pkg/driver", where, o)
		}
	}
}

// checkReadCache: the mounter passes the read-cache directory to its servers
// and has it mounted there; without readCache.enabled it has neither.
func checkReadCache(t *testing.T, spec corev1.PodSpec, dir string) {
	t.Helper()
	m := container(t, spec, "mounter")
	if !slices.Contains(m.Args, "--cache-dir="+dir) {
		t.Errorf("mounter args %v lack --cache-dir=%s", m.Args, dir)
	}
	mounted := false
	for _, vm := range m.VolumeMounts {
		mounted = mounted || (vm.Name == "read-cache" && vm.MountPath == dir)
	}
	if !mounted {
		t.Errorf("the read-cache volume is not mounted at %s: %+v", dir, m.VolumeMounts)
	}
}

func volumeNamed(t *testing.T, spec corev1.PodSpec, name string) corev1.Volume {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %s in %v", name, spec.Volumes)
	return corev1.Volume{}
}

// Without readCache.enabled the mounter has no cache directory: volumes
// asking for cache_size are refused at publish, naming the option.
func TestNoReadCacheByDefault(t *testing.T) {
	spec := named[*appsv1.DaemonSet](t, renderObjects(t, nil), "cosmount-mounter").Spec.Template.Spec
	for _, a := range container(t, spec, "mounter").Args {
		if strings.HasPrefix(a, "--cache-dir") {
			t.Errorf("default mounter args carry %s", a)
		}
	}
	for _, v := range spec.Volumes {
		if v.Name == "read-cache" {
			t.Error("a read-cache volume by default")
		}
	}
}
