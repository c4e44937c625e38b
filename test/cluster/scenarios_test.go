//go:build cluster

package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/emulator/audit"
)

// staticPV is a pre-provisioned PV on a bucket that exists, mounted with
// the pod's identity through profile.
func staticPV(t *testing.T, name, bucket, profileID string) {
	t.Helper()
	ctx := testContext(t)
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver:       DriverName,
				VolumeHandle: name,
				VolumeAttributes: map[string]string{
					"bucketName":       bucket,
					"cosEndpoint":      env.emu.COS,
					"region":           "us-south",
					"authType":         "trustedProfile",
					"trustedProfileID": profileID,
				},
			}},
		},
	}
	if _, err := env.c.Client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create PV: %v", err)
	}
	logStep("%s: created static PV %s on bucket %s, trusted profile %s", t.Name(), name, bucket, profileID)
	t.Cleanup(func() {
		_ = env.c.Client.CoreV1().PersistentVolumes().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// bearerPut finds the successful bearer PUT of bucket/key in the audit
// entries.
func bearerPut(entries []audit.Entry, bucket, key string) (audit.Entry, bool) {
	for _, e := range entries {
		if e.Service == "cos" && e.Method == "PUT" && e.Bucket == bucket && e.Key == key && e.Status == 200 {
			return e, true
		}
	}
	return audit.Entry{}, false
}

func checkBearerPut(t *testing.T, since int, bucket, key, profile string) {
	t.Helper()
	entries, err := env.emu.Audit(testContext(t), since)
	if err != nil {
		t.Fatal(err)
	}
	e, ok := bearerPut(entries, bucket, key)
	if !ok {
		t.Fatalf("audit has no successful PUT of %s/%s", bucket, key)
	}
	if e.AuthScheme != "bearer" || e.PrincipalType != "profile" || e.PrincipalID != profile {
		t.Fatalf("PUT %s/%s was by %s %s (%s), want bearer by profile %s", bucket, key, e.PrincipalType, e.PrincipalID, e.AuthScheme, profile)
	}
	logStep("%s: audit: %s %s/%s by %s %s with a %s token", t.Name(), e.Method, bucket, key, e.PrincipalType, e.PrincipalID, e.AuthScheme)
}

// Scenario 1: the seed's story.
func TestStaticVolumeHelloWorld(t *testing.T) {
	since, err := env.emu.AuditLen(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	staticPV(t, "e2e-static-hello", StaticBucket, WriterProfileID)
	createClaim(t, "hello", "", "e2e-static-hello")
	waitBound(t, "hello")
	createPod(t, workloadPod("hello", WriterSA, "echo hello world > /data/hello.txt", pvcVolume("data", "hello", false)))
	waitPod(t, "hello", corev1.PodSucceeded)
	objectIs(t, StaticBucket, "hello.txt", "hello world\n")
	checkBearerPut(t, since, StaticBucket, "hello.txt", WriterProfileID)

	// The pod's token reached IAM: its exchange is in the audit too.
	entries, err := env.emu.Audit(testContext(t), since)
	if err != nil {
		t.Fatal(err)
	}
	var exchanged bool
	for _, e := range entries {
		if e.Service == "iam" && e.Status == 200 && e.PrincipalID == WriterProfileID {
			exchanged = true
		}
	}
	if !exchanged {
		t.Fatalf("audit shows no successful IAM exchange for %s", WriterProfileID)
	}
}

// Scenario 2: dynamic provisioning through csi-provisioner, bucket mode
// and prefix mode, with reclaim Delete.
func TestDynamicProvisioning(t *testing.T) {
	cases := []struct {
		name, class string
		check       func(t *testing.T, attrs map[string]string)
		gone        func(ctx context.Context, attrs map[string]string) error
	}{
		{
			name: "bucket", class: "cosmount-smart",
			check: func(t *testing.T, attrs map[string]string) {
				loc, err := env.emu.Store.BucketLocation(testContext(t), attrs["bucketName"])
				if err != nil {
					t.Fatal(err)
				}
				if loc != "us-south-smart" {
					t.Fatalf("bucket %s has LocationConstraint %q, want us-south-smart", attrs["bucketName"], loc)
				}
				logStep("%s: bucket %s created with LocationConstraint %s", t.Name(), attrs["bucketName"], loc)
			},
			gone: func(ctx context.Context, attrs map[string]string) error {
				err := env.emu.Store.HeadBucket(ctx, attrs["bucketName"])
				if errors.Is(err, cos.ErrNotFound) {
					return nil
				}
				return fmt.Errorf("bucket %s still there (%v)", attrs["bucketName"], err)
			},
		},
		{
			name: "prefix", class: "cosmount-prefix",
			check: func(t *testing.T, attrs map[string]string) {
				if attrs["bucketName"] != SharedBucket || attrs["prefix"] == "" {
					t.Fatalf("prefix volume attributes %v: want bucket %s and a prefix", attrs, SharedBucket)
				}
				logStep("%s: volume is prefix %s/%s", t.Name(), SharedBucket, attrs["prefix"])
			},
			gone: func(ctx context.Context, attrs map[string]string) error {
				page, err := env.emu.Store.ListObjects(ctx, SharedBucket, cos.ListOptions{Prefix: attrs["prefix"] + "/"})
				if err != nil {
					return err
				}
				if len(page.Objects) > 0 {
					return fmt.Errorf("%d objects left under %s", len(page.Objects), attrs["prefix"])
				}
				return nil
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			since, err := env.emu.AuditLen(testContext(t))
			if err != nil {
				t.Fatal(err)
			}
			claim := "dyn-" + tc.name
			createClaim(t, claim, tc.class, "")
			pvName := waitBound(t, claim)
			pv, err := env.c.Client.CoreV1().PersistentVolumes().Get(testContext(t), pvName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			attrs := pv.Spec.CSI.VolumeAttributes
			tc.check(t, attrs)

			pod := "writer-" + tc.name
			createPod(t, workloadPod(pod, WriterSA, "echo provisioned > /data/file.txt", pvcVolume("data", claim, false)))
			waitPod(t, pod, corev1.PodSucceeded)
			key := "file.txt"
			if p := attrs["prefix"]; p != "" {
				key = p + "/file.txt"
			}
			objectIs(t, attrs["bucketName"], key, "provisioned\n")
			checkBearerPut(t, since, attrs["bucketName"], key, VolumesProfileID)

			deletePod(t, WorkloadNS, pod)
			ctx := testContext(t)
			if err := env.c.Client.CoreV1().PersistentVolumeClaims(WorkloadNS).Delete(ctx, claim, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			logStep("%s: deleted PVC %s (reclaim policy Delete)", t.Name(), claim)
			err = waitFor(ctx, "PV "+pvName+" deleted", podTimeout, nil, func(ctx context.Context) error {
				_, err := env.c.Client.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return nil
				}
				return fmt.Errorf("PV still there")
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := waitFor(ctx, "volume storage removed", time.Minute, nil, func(ctx context.Context) error { return tc.gone(ctx, attrs) }); err != nil {
				t.Fatal(err)
			}
			logStep("%s: PV %s and its storage are gone", t.Name(), pvName)
		})
	}
}

// Scenario 3: an inline ephemeral volume. Its author names the bucket,
// prefix and profile; the endpoints are the admin's (--cos-endpoint).
func TestInlineEphemeralVolume(t *testing.T) {
	since, err := env.emu.AuditLen(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	vol := corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
		Driver: DriverName,
		VolumeAttributes: map[string]string{
			"bucketName":       StaticBucket,
			"prefix":           "inline",
			"trustedProfileID": WriterProfileID,
		},
	}}}
	createPod(t, workloadPod("inline", WriterSA, "echo inline > /data/inline.txt", vol))
	waitPod(t, "inline", corev1.PodSucceeded)
	objectIs(t, StaticBucket, "inline/inline.txt", "inline\n")
	checkBearerPut(t, since, StaticBucket, "inline/inline.txt", WriterProfileID)
}

// Scenario 4: a service account no profile trusts never gets a mount.
func TestUntrustedServiceAccountIsRefused(t *testing.T) {
	vol := corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
		Driver: DriverName,
		VolumeAttributes: map[string]string{
			"bucketName":       StaticBucket,
			"trustedProfileID": WriterProfileID,
		},
	}}}
	pod := createPod(t, workloadPod("intruder", IntruderSA, "echo pwned > /data/pwned.txt", vol))
	ctx := testContext(t)
	var message string
	err := waitFor(ctx, "FailedMount event naming IAM's refusal", podTimeout, nil, func(ctx context.Context) error {
		evs, err := env.c.Client.CoreV1().Events(WorkloadNS).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=intruder"})
		if err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == "FailedMount" && (strings.Contains(e.Message, "BXNIM0398E") || strings.Contains(e.Message, "not eligible")) {
				message = e.Message
				return nil
			}
		}
		return fmt.Errorf("no such event yet; events: %s", podEvents(t, "intruder"))
	})
	if err != nil {
		t.Fatal(err)
	}
	logStep("%s: event: FailedMount: %s", t.Name(), message)
	p, err := env.c.Client.CoreV1().Pods(WorkloadNS).Get(ctx, "intruder", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Status.Phase != corev1.PodPending {
		t.Fatalf("pod phase %s, want Pending", p.Status.Phase)
	}
	if m, ok := volumeMount(pod.UID); ok {
		t.Fatalf("pod has a mount at %s", m.Target)
	}
	if _, err := env.emu.ReadObject(ctx, StaticBucket, "pwned.txt"); !errors.Is(err, cos.ErrNotFound) {
		t.Fatalf("pwned.txt: err = %v, want not found", err)
	}
	logStep("%s: pod stays Pending with no mount and no object", t.Name())
}

// Scenario 5: a read-only claim refuses writes; deleting a pod unmounts
// its volume and stops its FUSE server.
func TestReadOnlyAndUnmountOnDelete(t *testing.T) {
	staticPV(t, "e2e-static-ro", StaticBucket, WriterProfileID)
	createClaim(t, "ro", "", "e2e-static-ro")
	waitBound(t, "ro")

	// The pod succeeds only if the write fails with a read-only error.
	script := `if (echo nope > /data/ro.txt) 2>/tmp/err; then echo "write succeeded"; exit 1; fi; cat /tmp/err; grep -qi "read-only" /tmp/err`
	createPod(t, workloadPod("ro", WriterSA, script, pvcVolume("data", "ro", true)))
	waitPod(t, "ro", corev1.PodSucceeded)
	logStep("%s: write refused: %s", t.Name(), strings.TrimSpace(podLogs(t, "ro")))
	if _, err := env.emu.ReadObject(testContext(t), StaticBucket, "ro.txt"); !errors.Is(err, cos.ErrNotFound) {
		t.Fatalf("ro.txt: err = %v, want not found", err)
	}

	pod := createPod(t, workloadPod("long", WriterSA, "echo alive > /data/long.txt && sleep 3600", pvcVolume("data", "ro", false)))
	waitPod(t, "long", corev1.PodRunning)
	m, ok := volumeMount(pod.UID)
	if !ok {
		t.Fatal("running pod has no FUSE mount on the host")
	}
	pids := serverPIDs(m.Target)
	if len(pids) != 1 {
		t.Fatalf("FUSE servers for %s: %v, want exactly one", m.Target, pids)
	}
	logStep("%s: mount %d (%s) at %s served by pid %d", t.Name(), m.ID, m.FSType, m.Target, pids[0])
	deletePod(t, WorkloadNS, "long")
	err := waitFor(testContext(t), "mount and server gone", time.Minute, nil, func(context.Context) error {
		if _, ok := volumeMount(pod.UID); ok {
			return fmt.Errorf("mount still there")
		}
		if p := serverPIDs(m.Target); len(p) > 0 {
			return fmt.Errorf("server %v still running", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	logStep("%s: after deleting the pod the mount is gone and pid %d has exited", t.Name(), pids[0])
}

// Scenario 6: kubelet's republish rounds keep the same mount and server.
func TestRepublishKeepsMount(t *testing.T) {
	staticPV(t, "e2e-static-republish", StaticBucket, WriterProfileID)
	createClaim(t, "republish", "", "e2e-static-republish")
	waitBound(t, "republish")
	script := `i=0; while true; do i=$((i+1)); echo "round $i" > /data/republish.txt || exit 1; sleep 5; done`
	pod := createPod(t, workloadPod("republish", WriterSA, script, pvcVolume("data", "republish", false)))
	waitPod(t, "republish", corev1.PodRunning)
	before, ok := volumeMount(pod.UID)
	if !ok {
		t.Fatal("no FUSE mount for the pod")
	}
	pidsBefore := serverPIDs(before.Target)
	if len(pidsBefore) != 1 {
		t.Fatalf("FUSE servers: %v, want one", pidsBefore)
	}
	start := publishCalls(t)
	logStep("%s: mount %d served by pid %d; %d NodePublishVolume calls so far; waiting for 3 republish rounds (kubelet syncs every 10s)",
		t.Name(), before.ID, pidsBefore[0], start)
	err := waitFor(testContext(t), "three republish rounds", 3*time.Minute, nil, func(context.Context) error {
		if n := publishCalls(t); n < start+3 {
			return fmt.Errorf("%d NodePublishVolume calls since", n-start)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	after, ok := volumeMount(pod.UID)
	if !ok {
		t.Fatal("mount vanished after republish")
	}
	pidsAfter := serverPIDs(after.Target)
	if after.ID != before.ID || len(pidsAfter) != 1 || pidsAfter[0] != pidsBefore[0] {
		t.Fatalf("after republish: mount %d pids %v, before: mount %d pid %d", after.ID, pidsAfter, before.ID, pidsBefore[0])
	}
	p, err := env.c.Client.CoreV1().Pods(WorkloadNS).Get(testContext(t), "republish", metav1.GetOptions{})
	if err != nil || p.Status.Phase != corev1.PodRunning {
		t.Fatalf("writer pod: %v phase %v\nlogs: %s", err, p.Status.Phase, podLogs(t, "republish"))
	}
	got, err := env.emu.ReadObject(testContext(t), StaticBucket, "republish.txt")
	if err != nil || !strings.HasPrefix(string(got), "round ") {
		t.Fatalf("republish.txt = %q, %v", got, err)
	}
	logStep("%s: %d republish calls later: same mount %d, same pid %d, writes still land (%q)",
		t.Name(), publishCalls(t)-start, after.ID, pidsAfter[0], strings.TrimSpace(string(got)))
}

// publishCalls counts finished NodePublishVolume calls in the node
// plugin's log (the plugin logs each at verbosity 2).
func publishCalls(t *testing.T) int {
	t.Helper()
	ctx := testContext(t)
	pods, err := env.c.Client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=node"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("node plugin pod: %v (%d found)", err, len(pods.Items))
	}
	logs := containerLogs("kube-system", pods.Items[0].Name, "cosmount-csi")
	n := 0
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "NodePublishVolume") && strings.Contains(line, "CSI call done") {
			n++
		}
	}
	return n
}
