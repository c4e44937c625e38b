//go:build cluster

package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cosmount/cosmount/pkg/mounterapi"
)

// These scenarios are issue #8's: the node plugin's container dies or is
// replaced while pods write, and the mounts live on in the mounter.

// mounterClient talks to the node's mounter over its socket on the host,
// the way the node plugin does.
func mounterClient(t *testing.T) *mounterapi.Client {
	t.Helper()
	c, err := mounterapi.Dial("unix://" + filepath.Join(env.ep.StateDir, "run", "cosmount", "mounter", "mounter.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// nodePlugin is a CSI client of the node plugin through kubelet's socket.
func nodePlugin(t *testing.T) csi.NodeClient {
	t.Helper()
	sock := filepath.Join(env.c.KubeletDir, "plugins", DriverName, "csi.sock")
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return csi.NewNodeClient(conn)
}

// systemPod is the one kube-system pod of component, with its container's
// runtime ID.
func systemPod(t *testing.T, component, container string) (*corev1.Pod, string) {
	t.Helper()
	pods, err := env.c.Client.CoreV1().Pods("kube-system").List(testContext(t), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=" + component})
	if err != nil {
		t.Fatal(err)
	}
	var live []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	if len(live) != 1 {
		t.Fatalf("%d %s pods", len(live), component)
	}
	for _, cs := range live[0].Status.ContainerStatuses {
		if cs.Name == container {
			_, id, _ := strings.Cut(cs.ContainerID, "://")
			return &live[0], id
		}
	}
	t.Fatalf("pod %s has no container %s", live[0].Name, container)
	return nil, ""
}

// waitNodePluginReady waits until the node plugin pod is ready with a
// container other than oldID (restarted or replaced) and, if image is set,
// running that image.
func waitNodePluginReady(t *testing.T, oldID, image string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	err := waitFor(testContext(t), "node plugin back", 3*time.Minute, nil, func(ctx context.Context) error {
		pods, err := env.c.Client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=node"})
		if err != nil {
			return err
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.DeletionTimestamp != nil || !podReady(p) {
				continue
			}
			if image != "" && !podRuns(p, "cosmount-csi", image) {
				continue
			}
			for _, cs := range p.Status.ContainerStatuses {
				if cs.Name == "cosmount-csi" && cs.Ready && !strings.HasSuffix(cs.ContainerID, oldID) {
					pod = p
					return nil
				}
			}
		}
		return fmt.Errorf("not yet: %s", env.c.podSummary(ctx, "kube-system"))
	})
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

// podRuns reports whether the pod's spec gives container image.
func podRuns(p *corev1.Pod, container, image string) bool {
	for _, c := range p.Spec.Containers {
		if c.Name == container {
			return c.Image == image
		}
	}
	return false
}

// streamPod writes one small file a second and, at the same time, a stream
// of mib MiB of random data; it fails on the first error, and when done
// prints the stream's checksum and the number of small files and sleeps
// (a finished pod would be unpublished).
func streamPod(name, claim string, mib int) *corev1.Pod {
	script := fmt.Sprintf(`set -e -o pipefail
(i=0; while [ ! -e /tmp/stop ]; do echo "tick $i" > /data/tick-$i.txt; i=$((i+1)); sleep 1; done; echo "TICKS $i") > /tmp/ticks &
T=$!
for i in $(seq 1 %d); do head -c 1048576 /dev/urandom; sleep 0.2; done | tee /data/stream.bin | sha256sum > /tmp/sum
touch /tmp/stop
wait $T
cat /tmp/ticks
echo "STREAM $(cut -d' ' -f1 /tmp/sum)"
sleep 3600`, mib)
	return workloadPod(name, WriterSA, script, pvcVolume("data", claim, false))
}

// checkStream checks what streamPod wrote against the bucket.
func checkStream(t *testing.T, pod string, mib int) {
	t.Helper()
	logs := podLogs(t, pod)
	var ticks int
	var sum string
	for _, line := range strings.Split(logs, "\n") {
		if v, ok := strings.CutPrefix(line, "TICKS "); ok {
			ticks, _ = strconv.Atoi(v)
		}
		if v, ok := strings.CutPrefix(line, "STREAM "); ok {
			sum = v
		}
	}
	if ticks < 10 || sum == "" {
		t.Fatalf("pod %s did not report its writes:\n%s", pod, logs)
	}
	ctx := testContext(t)
	got, err := env.emu.ReadObject(ctx, StaticBucket, "stream.bin")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(got)
	if len(got) != mib<<20 || hex.EncodeToString(h[:]) != sum {
		t.Fatalf("stream.bin: %d bytes in the bucket (want %d), checksum match %v", len(got), mib<<20, hex.EncodeToString(h[:]) == sum)
	}
	for i := 0; i < ticks; i++ {
		name := fmt.Sprintf("tick-%d.txt", i)
		b, err := env.emu.ReadObject(ctx, StaticBucket, name)
		if err != nil || string(b) != fmt.Sprintf("tick %d\n", i) {
			t.Fatalf("%s = %q, %v", name, b, err)
		}
	}
	logStep("%s: all %d small files and the %d MiB stream are in the bucket with the right bytes", t.Name(), ticks, mib)
}

// The node plugin's container is killed through the runtime (a crash or an
// OOM kill), then its DaemonSet rolls to a new image, while a pod writes
// one file a second and a 200 MiB stream: the pod never sees an error,
// every byte lands, the mount and its server never change; kubelet's
// republishes reach the new plugin and the mounter; deleting the pod
// unpublishes cleanly through the new plugin and the server exits.
func TestNodePluginRestartAndUpgradeKeepMounts(t *testing.T) {
	const mib = 200
	staticPV(t, "e2e-static-restart", StaticBucket, WriterProfileID)
	createClaim(t, "restart", "", "e2e-static-restart")
	waitBound(t, "restart")
	pod := createPod(t, streamPod("restart", "restart", mib))
	waitPod(t, "restart", corev1.PodRunning)
	m, ok := waitVolumeMount(t, pod.UID)
	if !ok {
		t.Fatal("no FUSE mount for the pod")
	}
	mc := mounterClient(t)
	before, err := mc.Status(testContext(t), &mounterapi.StatusRequest{Target: m.Target})
	if err != nil {
		t.Fatal(err)
	}
	logStep("%s: mount %d served by the mounter's server pid %d (in the mounter's PID namespace)", t.Name(), m.ID, before.PID)

	// 1. The plugin's container dies the way a crash or OOM kill ends it:
	// the runtime kills its init, and with it its PID namespace.
	_, id := systemPod(t, "node", "cosmount-csi")
	if _, err := env.c.ctr(testContext(t), "task", "kill", "--signal", "SIGKILL", id); err != nil {
		t.Fatal(err)
	}
	logStep("%s: killed the node plugin's container %s through containerd", t.Name(), id[:12])
	restarted := waitNodePluginReady(t, id, "")
	logStep("%s: kubelet restarted the node plugin (pod %s)", t.Name(), restarted.Name)

	// 2. A rolling update of the node plugin DaemonSet to a new image.
	_, id = systemPod(t, "node", "cosmount-csi")
	ctx := testContext(t)
	ds, err := env.c.Client.AppsV1().DaemonSets("kube-system").Get(ctx, "cosmount-node", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	oldImage := ""
	for i := range ds.Spec.Template.Spec.Containers {
		if c := &ds.Spec.Template.Spec.Containers[i]; c.Name == "cosmount-csi" {
			oldImage, c.Image = c.Image, NextPluginImage
		}
	}
	if _, err := env.c.Client.AppsV1().DaemonSets("kube-system").Update(ctx, ds, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rollNodePlugin(t, oldImage) })
	logStep("%s: rolling the node plugin DaemonSet from %s to %s", t.Name(), oldImage, NextPluginImage)
	upgraded := waitNodePluginReady(t, id, NextPluginImage)
	logStep("%s: the node plugin runs %s (pod %s)", t.Name(), NextPluginImage, upgraded.Name)

	// kubelet's periodic republish reaches the new plugin, and through it
	// the mounter, which finds the same volume with the same credentials.
	start := publishCalls(t)
	err = waitFor(testContext(t), "a republish through the upgraded plugin", 2*time.Minute, nil, func(context.Context) error {
		if n := publishCalls(t); n <= start {
			return fmt.Errorf("no NodePublishVolume yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	var ended error
	err = waitFor(testContext(t), "the pod to finish writing", 5*time.Minute, nil, func(ctx context.Context) error {
		p, err := env.c.Client.CoreV1().Pods(WorkloadNS).Get(ctx, "restart", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning {
			ended = fmt.Errorf("the writing pod is %s (it saw an error)\nlogs: %s\nevents: %s", p.Status.Phase, podLogs(t, "restart"), podEvents(t, "restart"))
			return nil
		}
		if !strings.Contains(podLogs(t, "restart"), "STREAM ") {
			return fmt.Errorf("still writing")
		}
		return nil
	})
	if err == nil {
		err = ended
	}
	if err != nil {
		t.Fatal(err)
	}
	after, err := mc.Status(testContext(t), &mounterapi.StatusRequest{Target: m.Target})
	if err != nil {
		t.Fatal(err)
	}
	now, ok := volumeMount(pod.UID)
	if !ok || now.ID != m.ID || after.PID != before.PID || !after.Started.Equal(before.Started) {
		t.Fatalf("the mount or its server changed: mount %d -> %d (%v), pid %d -> %d", m.ID, now.ID, ok, before.PID, after.PID)
	}
	logStep("%s: the pod finished writing without an error; same mount %d, same server", t.Name(), m.ID)
	checkStream(t, "restart", mib)

	// Unpublish through the upgraded plugin: the mount goes, the server exits.
	pids := serverPIDs(m.Target)
	deletePod(t, WorkloadNS, "restart")
	err = waitFor(testContext(t), "mount and server gone", time.Minute, nil, func(ctx context.Context) error {
		if _, ok := volumeMount(pod.UID); ok {
			return fmt.Errorf("mount still there")
		}
		if p := serverPIDs(m.Target); len(p) > 0 {
			return fmt.Errorf("server %v still running", p)
		}
		if _, err := mc.Status(ctx, &mounterapi.StatusRequest{Target: m.Target}); status.Code(err) != codes.NotFound {
			return fmt.Errorf("the mounter still knows the volume: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	logStep("%s: after deleting the pod the mount is gone and server %v has exited", t.Name(), pids)
}

// rollNodePlugin puts the node plugin back on image, for the scenarios
// that follow.
func rollNodePlugin(t *testing.T, image string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ds, err := env.c.Client.AppsV1().DaemonSets("kube-system").Get(ctx, "cosmount-node", metav1.GetOptions{})
	if err != nil {
		t.Error(err)
		return
	}
	for i := range ds.Spec.Template.Spec.Containers {
		if c := &ds.Spec.Template.Spec.Containers[i]; c.Name == "cosmount-csi" {
			if c.Image == image {
				return
			}
			c.Image = image
		}
	}
	if _, err := env.c.Client.AppsV1().DaemonSets("kube-system").Update(ctx, ds, metav1.UpdateOptions{}); err != nil {
		t.Error(err)
		return
	}
	_, id := systemPod(t, "node", "cosmount-csi")
	waitNodePluginReady(t, id, "")
}

func waitVolumeMount(t *testing.T, uid types.UID) (fuseMount, bool) {
	t.Helper()
	var m fuseMount
	var ok bool
	_ = waitFor(testContext(t), "the pod's FUSE mount", time.Minute, nil, func(context.Context) error {
		if m, ok = volumeMount(uid); !ok {
			return fmt.Errorf("not mounted")
		}
		return nil
	})
	return m, ok
}

// A server killed with SIGKILL (or by the OOM killer) is reported through
// NodeGetVolumeHealth with the reason until the volume is unpublished;
// deleting the pod cleans up the dead mount.
func TestKilledServerIsReported(t *testing.T) {
	staticPV(t, "e2e-static-killed", StaticBucket, WriterProfileID)
	createClaim(t, "killed", "", "e2e-static-killed")
	waitBound(t, "killed")
	pod := createPod(t, workloadPod("killed", WriterSA, "echo alive > /data/killed.txt && sleep 3600", pvcVolume("data", "killed", false)))
	waitPod(t, "killed", corev1.PodRunning)
	m, ok := waitVolumeMount(t, pod.UID)
	if !ok {
		t.Fatal("no FUSE mount for the pod")
	}
	pids := serverPIDs(m.Target)
	if len(pids) != 1 {
		t.Fatalf("servers of %s: %v", m.Target, pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	logStep("%s: killed the server (pid %d) of %s", t.Name(), pids[0], m.Target)
	node := nodePlugin(t)
	var health *csi.NodeGetVolumeHealthResponse
	err := waitFor(testContext(t), "NodeGetVolumeHealth abnormal", time.Minute, nil, func(ctx context.Context) error {
		h, err := node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: "e2e-static-killed", VolumePublishPath: m.Target})
		if err != nil {
			return err
		}
		if st := h.GetVolumeHealth().GetHealthStatuses(); len(st) != 1 || st[0].GetReason() != "ServerKilled" {
			return fmt.Errorf("health %v", h)
		}
		health = h
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	logStep("%s: NodeGetVolumeHealth: %s: %s", t.Name(), health.GetVolumeHealth().GetHealthStatuses()[0].GetReason(), health.GetVolumeHealth().GetHealthStatuses()[0].GetMessage())
	deletePod(t, WorkloadNS, "killed")
	err = waitFor(testContext(t), "the dead mount cleaned up", time.Minute, nil, func(context.Context) error {
		if _, ok := volumeMount(pod.UID); ok {
			return fmt.Errorf("mount still there")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	logStep("%s: deleting the pod removed the dead mount", t.Name())
}

// setCOSLatency adds d to every COS request of the emulator.
func setCOSLatency(t *testing.T, d time.Duration) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"service": "cos", "action": "latency", "duration": d.String()})
	resp, err := http.Post(env.emu.COS+"/_emulator/faults", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("set COS latency: %s", resp.Status)
	}
}

// writtenBytes is how much a process has written (write(2) returned), from
// /proc/<pid>/io.
func writtenBytes(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "wchar: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}

// A pod deleted while its last file is still being uploaded, behind a slow
// COS: the pod's deletion waits, and the object lands complete.
func TestPodDeletedWhileUploading(t *testing.T) {
	const mib = 64
	staticPV(t, "e2e-static-lastfile", StaticBucket, WriterProfileID)
	createClaim(t, "lastfile", "", "e2e-static-lastfile")
	waitBound(t, "lastfile")
	script := fmt.Sprintf("dd if=/dev/zero of=/data/last.bin bs=1M count=%d 2>/dev/null; sleep 3600", mib)
	spec := workloadPod("lastfile", WriterSA, script, pvcVolume("data", "lastfile", false))
	// A grace period as pods have: the API object goes only once kubelet
	// has stopped the containers and unpublished the volume.
	grace := int64(5)
	spec.Spec.TerminationGracePeriodSeconds = &grace
	pod := createPod(t, spec)
	waitPod(t, "lastfile", corev1.PodRunning)
	setCOSLatency(t, 300*time.Millisecond)
	t.Cleanup(func() { setCOSLatency(t, 0) })
	m, ok := waitVolumeMount(t, pod.UID)
	if !ok {
		t.Fatal("no FUSE mount for the pod")
	}
	// Wait until dd's writes have all been accepted (it is now closing the
	// file, which uploads behind the latency), then delete the pod.
	var dd int
	err := waitFor(testContext(t), "dd to have written everything", 3*time.Minute, nil, func(context.Context) error {
		for _, pid := range processesNamed("dd", "last.bin") {
			if writtenBytes(pid) >= mib<<20 {
				dd = pid
				return nil
			}
		}
		return fmt.Errorf("not yet")
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := mounterClient(t).Status(testContext(t), &mounterapi.StatusRequest{Target: m.Target, Pending: true})
	if err == nil && st.Pending != nil {
		logStep("%s: dd (pid %d) wrote %d MiB; the server has %d file(s), %d bytes not yet uploaded; deleting the pod", t.Name(), dd, mib, st.Pending.Files, st.Pending.Bytes)
	}
	deleted := time.Now()
	deletePod(t, WorkloadNS, "lastfile")
	err = waitFor(testContext(t), "the volume unpublished", 3*time.Minute, nil, func(context.Context) error {
		if _, ok := volumeMount(pod.UID); ok {
			return fmt.Errorf("still mounted")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	logStep("%s: the pod's deletion and unpublish took %s", t.Name(), time.Since(deleted).Round(100*time.Millisecond))
	setCOSLatency(t, 0)
	got, err := env.emu.ReadObject(testContext(t), StaticBucket, "last.bin")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != mib<<20 || !bytes.Equal(got, make([]byte, mib<<20)) {
		t.Fatalf("last.bin: %d bytes in the bucket, want %d zeros", len(got), mib<<20)
	}
	logStep("%s: last.bin landed complete (%d MiB)", t.Name(), mib)
}

// processesNamed lists processes whose command is comm and whose command
// line contains arg.
func processesNamed(comm, arg string) []int {
	var out []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		c, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil || strings.TrimSpace(string(c)) != comm {
			continue
		}
		cl, _ := os.ReadFile(filepath.Join(d, "cmdline"))
		if strings.Contains(string(cl), arg) {
			pid, _ := strconv.Atoi(filepath.Base(d))
			out = append(out, pid)
		}
	}
	return out
}
