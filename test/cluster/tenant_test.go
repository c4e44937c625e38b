//go:build cluster

package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Tenant isolation on a real node: two namespaces, one StorageClass in
// prefix mode (the chart's cosmount-prefix, naming cosmount-${pod.namespace}),
// and one IAM profile per namespace limited to its own prefix. IAM, not the
// cluster, decides who reads what.
func TestTenantIsolation(t *testing.T) {
	ctx := testContext(t)
	for _, ns := range []string{TenantA, TenantB} {
		createTenantNamespace(t, ns)
	}
	since, err := env.emu.AuditLen(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// A's claim, provisioned by the one StorageClass; A's pod writes.
	claimIn(t, TenantA, "data", "cosmount-prefix", "")
	pvName := waitBoundIn(t, TenantA, "data")
	pv, err := env.c.Client.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	attrs := pv.Spec.CSI.VolumeAttributes
	prefixA := attrs["prefix"]
	if !strings.HasPrefix(prefixA, "volumes/"+TenantA+"/data-") || attrs["trustedProfileName"] != "cosmount-${pod.namespace}" {
		t.Fatalf("A's volume attributes %v: want prefix volumes/%s/data-<hash> and the per-namespace template", attrs, TenantA)
	}
	logStep("%s: A's claim is %s/%s, trusted profile %q", t.Name(), SharedBucket, prefixA, attrs["trustedProfileName"])
	podIn(t, TenantA, "writer-a", "echo secret of A > /data/a.txt && cat /data/a.txt", pvcVolume("data", "data", false))
	waitPodIn(t, TenantA, "writer-a", corev1.PodSucceeded)
	objectIs(t, SharedBucket, prefixA+"/a.txt", "secret of A\n")
	checkBearerPut(t, since, SharedBucket, prefixA+"/a.txt", TenantProfileID(TenantA))

	// B mounts A's prefix: by a PV written by hand (bound to B's claim) ...
	staticPVOf(t, "e2e-steal-a", map[string]string{
		"bucketName": SharedBucket, "prefix": prefixA, "cosEndpoint": env.emu.COS,
		"trustedProfileName": "cosmount-${pod.namespace}",
	})
	claimIn(t, TenantB, "stolen", "", "e2e-steal-a")
	waitBoundIn(t, TenantB, "stolen")
	podIn(t, TenantB, "thief-pv", "cat /data/a.txt", pvcVolume("data", "stolen", false))
	// ... or inline, with its own namespace's profile or naming A's.
	inline := func(profile string) corev1.Volume {
		return corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
			Driver: DriverName, VolumeAttributes: map[string]string{"bucketName": SharedBucket, "prefix": prefixA, "trustedProfileName": profile}}}}
	}
	podIn(t, TenantB, "thief-inline", "cat /data/a.txt", inline("cosmount-${pod.namespace}"))
	podIn(t, TenantB, "thief-profile", "cat /data/a.txt", inline("cosmount-"+TenantA))
	for pod, want := range map[string][]string{
		"thief-pv":      {"AccessDenied", "Access Denied"},
		"thief-inline":  {"AccessDenied", "Access Denied"},
		"thief-profile": {"BXNIM0398E", "not eligible"},
	} {
		msg := waitEventIn(t, TenantB, pod, "FailedMount", want...)
		logStep("%s: %s refused: %s", t.Name(), pod, msg)
	}
	for _, pod := range []string{"thief-pv", "thief-inline", "thief-profile"} {
		p, err := env.c.Client.CoreV1().Pods(TenantB).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Status.Phase != corev1.PodPending {
			t.Errorf("%s: phase %s, want Pending (no mount)", pod, p.Status.Phase)
		}
		if m, ok := volumeMount(p.UID); ok {
			t.Errorf("%s has a mount at %s", pod, m.Target)
		}
	}
	// IAM's answers in the audit: nothing of A's prefix was read or listed
	// by anyone but A's profile.
	entries, err := env.emu.Audit(ctx, since)
	if err != nil {
		t.Fatal(err)
	}
	denied := 0
	for _, e := range entries {
		if e.Service != "cos" || e.Bucket != SharedBucket || e.PrincipalID == TenantProfileID(TenantA) ||
			e.PrincipalID == ProvisionerProfile || e.PrincipalID == observerKeyID {
			continue
		}
		if e.Status < 300 && (strings.HasPrefix(e.Key, prefixA) || e.Operation == "ListObjectsV2" || e.Operation == "GetObject") {
			t.Errorf("audit: %s %s/%s by %s %s answered %d", e.Operation, e.Bucket, e.Key, e.PrincipalType, e.PrincipalID, e.Status)
		}
		if e.Status == 403 {
			denied++
		}
	}
	if denied == 0 {
		t.Error("audit shows no request of B's profile refused by COS")
	}
	objectIs(t, SharedBucket, prefixA+"/a.txt", "secret of A\n")
	logStep("%s: B's pods stay Pending with no mount; COS refused B's profile %d times; A's data is untouched", t.Name(), denied)
}

// An inline volume may not pick an endpoint: the pod's token would go
// wherever its author says.
func TestInlineVolumeWithForeignEndpointIsRefused(t *testing.T) {
	createTenantNamespace(t, TenantB)
	vol := corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
		Driver: DriverName, VolumeAttributes: map[string]string{
			"bucketName": SharedBucket, "trustedProfileName": "cosmount-${pod.namespace}",
			"iamEndpoint": "http://iam-thief." + TenantA + ".svc.cluster.local:8080",
		}}}}
	podIn(t, TenantB, "foreign-endpoint", "ls /data", vol)
	msg := waitEventIn(t, TenantB, "foreign-endpoint", "FailedMount", "iamEndpoint")
	if !strings.Contains(msg, "InvalidArgument") && !strings.Contains(msg, "may not be set") {
		t.Errorf("event %q does not say the attribute is refused", msg)
	}
	logStep("%s: refused: %s", t.Name(), msg)
}

// With inline volumes off (the chart's default), the CSIDriver offers only
// persistent volumes and kubelet tells the pod so.
func TestInlineVolumesDisabled(t *testing.T) {
	ctx := testContext(t)
	cs := env.c.Client.StorageV1().CSIDrivers()
	orig, err := cs.Get(ctx, DriverName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// volumeLifecycleModes cannot be changed in place: replace the object,
	// and put the suite's back at the end.
	restore := orig.DeepCopy()
	restore.ResourceVersion, restore.UID, restore.CreationTimestamp = "", "", metav1.Time{}
	off := restore.DeepCopy()
	off.Spec.VolumeLifecycleModes = []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent}
	replaceCSIDriver(t, off)
	t.Cleanup(func() { replaceCSIDriver(t, restore) })
	logStep("%s: CSIDriver %s now offers %v (the chart's default)", t.Name(), DriverName, off.Spec.VolumeLifecycleModes)

	createTenantNamespace(t, TenantB)
	vol := corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
		Driver: DriverName, VolumeAttributes: map[string]string{"bucketName": SharedBucket, "trustedProfileName": "cosmount-${pod.namespace}"}}}}
	podIn(t, TenantB, "inline-off", "ls /data", vol)
	msg := waitEventIn(t, TenantB, "inline-off", "FailedMount", `"Ephemeral" not supported by driver`)
	logStep("%s: event: %s", t.Name(), msg)
}

func replaceCSIDriver(t *testing.T, d *storagev1.CSIDriver) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs := env.c.Client.StorageV1().CSIDrivers()
	if err := cs.Delete(ctx, d.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	err := waitFor(ctx, "CSIDriver recreated", time.Minute, nil, func(ctx context.Context) error {
		_, err := cs.Create(ctx, d, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func createTenantNamespace(t *testing.T, ns string) {
	t.Helper()
	ctx := testContext(t)
	_, err := env.c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: TenantSA, Namespace: ns}}
	if _, err := env.c.Client.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func podIn(t *testing.T, ns, name, script string, vols ...corev1.Volume) *corev1.Pod {
	t.Helper()
	p := workloadPod(name, TenantSA, script, vols...)
	p.Namespace = ns
	return createPod(t, p)
}

// staticPVOf creates a Retain PV with the given attributes.
func staticPVOf(t *testing.T, name string, attrs map[string]string) {
	t.Helper()
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: DriverName, VolumeHandle: name, VolumeAttributes: attrs}},
		},
	}
	if _, err := env.c.Client.CoreV1().PersistentVolumes().Create(testContext(t), pv, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create PV: %v", err)
	}
	t.Cleanup(func() {
		_ = env.c.Client.CoreV1().PersistentVolumes().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// waitEventIn waits for an event of reason on the pod whose message holds
// one of substrs, and returns the message.
func waitEventIn(t *testing.T, ns, pod, reason string, substrs ...string) string {
	t.Helper()
	var msg string
	err := waitFor(testContext(t), reason+" event of "+ns+"/"+pod, podTimeout, nil, func(ctx context.Context) error {
		evs, err := env.c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod})
		if err != nil {
			return err
		}
		for _, e := range evs.Items {
			for _, s := range substrs {
				if e.Reason == reason && strings.Contains(e.Message, s) {
					msg = e.Message
					return nil
				}
			}
		}
		return errors.New("not yet; events: " + eventsIn(t, ns, pod))
	})
	if err != nil {
		t.Fatal(err)
	}
	return msg
}
