//go:build cluster

package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cosmount/cosmount/internal/testproc"
)

// Generous: two cores are shared with other builds, and a first mount
// includes an IAM exchange and a FUSE server start.
const podTimeout = 4 * time.Minute

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// workloadPod is a host-network busybox pod in the workload namespace
// (host network: the node has no CNI, see README).
func workloadPod(name, sa, script string, volumes ...corev1.Volume) *corev1.Pod {
	var mounts []corev1.VolumeMount
	for _, v := range volumes {
		mounts = append(mounts, corev1.VolumeMount{Name: v.Name, MountPath: "/" + v.Name})
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: WorkloadNS},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			HostNetwork:        true,
			RestartPolicy:      corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "main", Image: WorkloadImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sh", "-c", script}, VolumeMounts: mounts,
			}},
			Volumes: volumes,
			// Pods end quickly: a grace period only slows the suite.
			TerminationGracePeriodSeconds: new(int64),
		},
	}
}

func pvcVolume(name, claim string, readOnly bool) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim, ReadOnly: readOnly}}}
}

// createPod creates the pod and deletes it (waiting until it is gone, so
// its volume is unpublished) when the test ends.
func createPod(t *testing.T, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	ctx := testContext(t)
	p, err := env.c.Client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", pod.Name, err)
	}
	logStep("%s: created pod %s/%s (service account %s)", t.Name(), p.Namespace, p.Name, p.Spec.ServiceAccountName)
	t.Cleanup(func() { deletePod(t, p.Namespace, p.Name) })
	return p
}

func deletePod(t *testing.T, ns, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), podTimeout)
	defer cancel()
	err := env.c.Client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		t.Errorf("delete pod %s: %v", name, err)
		return
	}
	err = waitFor(ctx, "pod "+name+" deleted", podTimeout, nil, func(ctx context.Context) error {
		_, err := env.c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still present")
	})
	if err != nil {
		t.Errorf("%v", err)
		return
	}
	logStep("%s: pod %s/%s deleted", t.Name(), ns, name)
}

// waitPod waits until the workload namespace's pod reaches phase; see
// waitPodIn.
func waitPod(t *testing.T, name string, phase corev1.PodPhase) *corev1.Pod {
	t.Helper()
	return waitPodIn(t, WorkloadNS, name, phase)
}

// waitPodIn waits until the pod reaches phase; a pod that ends in another
// final phase fails the test at once, with its events.
func waitPodIn(t *testing.T, ns, name string, phase corev1.PodPhase) *corev1.Pod {
	t.Helper()
	ctx := testContext(t)
	var pod *corev1.Pod
	err := waitFor(ctx, "pod "+ns+"/"+name+" "+string(phase), podTimeout, nil, func(ctx context.Context) error {
		p, err := env.c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod = p
		switch p.Status.Phase {
		case phase, corev1.PodSucceeded, corev1.PodFailed:
			// A final phase other than the wanted one ends the wait too.
			return nil
		}
		return fmt.Errorf("phase %s", p.Status.Phase)
	})
	if pod != nil && pod.Status.Phase != phase {
		t.Fatalf("pod %s/%s: phase %s, want %s (%v)\nevents: %s\nlogs: %s", ns, name, pod.Status.Phase, phase, err,
			eventsIn(t, ns, name), containerLogs(ns, name, "main"))
	}
	if err != nil {
		t.Fatal(err)
	}
	logStep("%s: pod %s/%s is %s", t.Name(), ns, name, phase)
	return pod
}

func podEvents(t *testing.T, name string) string { return eventsIn(t, WorkloadNS, name) }

// eventsIn lists the events of the object named name in ns, a line each.
func eventsIn(t *testing.T, ns, name string) string {
	evs, err := env.c.Client.CoreV1().Events(ns).List(testContext(t), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		return err.Error()
	}
	var lines []string
	for _, e := range evs.Items {
		lines = append(lines, fmt.Sprintf("%s %s: %s", e.Type, e.Reason, e.Message))
	}
	return strings.Join(lines, "\n")
}

func podLogs(t *testing.T, name string) string {
	return containerLogs(WorkloadNS, name, "main")
}

// containerLogs reads a container's log files from kubelet's pod log
// directory. The API server cannot proxy logs here: kubelet refuses to
// publish a loopback node address, so the node has none to reach it by.
func containerLogs(ns, pod, container string) string {
	files, _ := filepath.Glob(filepath.Join(env.c.PodLogsDir(), ns+"_"+pod+"_*", container, "*.log"))
	sort.Strings(files)
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// CRI log lines: "<time> <stream> <tag> <message>".
		for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
			if parts := strings.SplitN(line, " ", 4); len(parts) == 4 {
				b.WriteString(parts[3] + "\n")
			}
		}
	}
	return b.String()
}

// createClaim creates a PVC in the workload namespace; see claimIn.
func createClaim(t *testing.T, name, class, volume string) {
	t.Helper()
	claimIn(t, WorkloadNS, name, class, volume)
}

// claimIn creates a PVC in ns and deletes it when the test ends.
func claimIn(t *testing.T, ns, name, class, volume string) {
	t.Helper()
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			StorageClassName: &class,
			VolumeName:       volume,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if _, err := env.c.Client.CoreV1().PersistentVolumeClaims(ns).Create(testContext(t), pvc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create PVC %s/%s: %v", ns, name, err)
	}
	logStep("%s: created PVC %s/%s (class %q)", t.Name(), ns, name, class)
	t.Cleanup(func() {
		_ = env.c.Client.CoreV1().PersistentVolumeClaims(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// waitBound waits for a PVC of the workload namespace; see waitBoundIn.
func waitBound(t *testing.T, claim string) string {
	t.Helper()
	return waitBoundIn(t, WorkloadNS, claim)
}

// waitBoundIn waits for the PVC to be bound and returns its PV's name.
func waitBoundIn(t *testing.T, ns, claim string) string {
	t.Helper()
	var pv string
	err := waitFor(testContext(t), "PVC "+ns+"/"+claim+" bound", podTimeout, nil, func(ctx context.Context) error {
		c, err := env.c.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if c.Status.Phase != corev1.ClaimBound {
			return fmt.Errorf("phase %s", c.Status.Phase)
		}
		pv = c.Spec.VolumeName
		return nil
	})
	if err != nil {
		t.Fatalf("%v\nevents: %s", err, eventsIn(t, ns, claim))
	}
	logStep("%s: PVC %s/%s bound to PV %s", t.Name(), ns, claim, pv)
	return pv
}

// objectIs waits for bucket/key to hold exactly want.
func objectIs(t *testing.T, bucket, key, want string) {
	t.Helper()
	ctx := testContext(t)
	var got []byte
	err := waitFor(ctx, "object "+bucket+"/"+key, time.Minute, nil, func(ctx context.Context) error {
		var err error
		got, err = env.emu.ReadObject(ctx, bucket, key)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("object %s/%s = %q, want %q", bucket, key, got, want)
	}
	logStep("%s: object %s/%s holds %q", t.Name(), bucket, key, got)
}

// fuseMount is a FUSE mount on the host as /proc/self/mountinfo shows it.
type fuseMount struct {
	ID     int
	Target string
	FSType string
}

// volumeMount finds the FUSE mount kubelet's target for pod uid has, if any.
func volumeMount(uid types.UID) (fuseMount, bool) {
	prefix := filepath.Join(env.c.KubeletDir, "pods", string(uid), "volumes", "kubernetes.io~csi") + "/"
	mounts, err := testproc.Mounts()
	if err != nil {
		return fuseMount{}, false
	}
	for _, m := range mounts {
		if strings.HasPrefix(m.Point, prefix) && strings.HasPrefix(m.FSType, "fuse") {
			return fuseMount{ID: m.ID, Target: m.Point, FSType: m.FSType}, true
		}
	}
	return fuseMount{}, false
}

// serverPIDs lists the cosmount FUSE server processes whose command line
// names target.
func serverPIDs(target string) []int {
	var pids []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "cosmount" {
			continue
		}
		for _, a := range args {
			if strings.Contains(a, target) {
				pid, _ := strconv.Atoi(filepath.Base(d))
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}
