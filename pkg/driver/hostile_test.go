package driver

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

// countingListener is where a hostile volume wants the plugin's tokens and
// keys to go: it counts every connection it is offered and answers nothing.
type countingListener struct {
	ln    net.Listener
	count atomic.Int64
}

func newCountingListener(t *testing.T) *countingListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &countingListener{ln: ln}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.count.Add(1)
			conn.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return c
}

func (c *countingListener) port() string {
	return c.ln.Addr().(*net.TCPAddr).AddrPort().String()[len("127.0.0.1:"):]
}

// TestHostileInputsReachNothing sends hostile volume attributes, templates
// and volume IDs to the plugin's gRPC socket, with the real IAM verifier
// and COS clients behind it: each is refused with InvalidArgument naming
// the attribute, and the listener they point at never gets a connection.
// Endpoints the admin did allow but that answer with a redirect to the
// listener fail without following it.
func TestHostileInputsReachNothing(t *testing.T) {
	env := emulatortest.Start(t)
	trap := newCountingListener(t)
	port := trap.port()
	trapURL := "http://127.0.0.1:" + port
	// An endpoint the admin allowed that redirects everything to the trap.
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, trapURL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()

	dir, err := os.MkdirTemp("", "csi-hostile-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	opts := DefaultOptions()
	opts.Endpoint = "unix://" + filepath.Join(dir, "csi.sock")
	opts.NodeID = "node-1"
	opts.IAMEndpoint = env.IAMURL
	opts.COSEndpoint = env.COSURL
	opts.AllowInsecureHTTP = true // the emulator and the redirector are plain http on loopback
	opts.AllowedIAMEndpoints = []string{redirector.URL}
	opts.AllowedCOSEndpoints = append([]string{redirector.URL}, DefaultAllowedCOSEndpoints...)
	opts.Inline = InlinePolicy{Enabled: true, AllowedAttributes: DefaultInlinePolicy().AllowedAttributes}
	opts.ControllerProfile = emulatortest.WriterProfileID
	opts.ControllerTokenFile = env.WritePodToken(t, dir, "default", "default", "controller", time.Hour)
	mounter := newFakeMounter()
	d, err := New(opts, Deps{Mounter: mounter, Verifier: NewIAMVerifier(), Stores: NewCOSStores(opts)})
	if err != nil {
		t.Fatal(err)
	}
	conn, _ := serve(t, d, filepath.Join(dir, "csi.sock"))
	node, controller := csi.NewNodeClient(conn), csi.NewControllerClient(conn)

	// A PV's attributes, with kubelet's pod info and token.
	pv := func(mod func(map[string]string)) *csi.NodePublishVolumeRequest {
		r := publishReq(filepath.Join(dir, "target"), podTokenA)
		r.VolumeContext[attrEndpoint] = env.COSURL
		r.VolumeContext[keyPodNamespace] = "team-b"
		mod(r.VolumeContext)
		return r
	}
	// An inline volume: what a pod author wrote, plus kubelet's keys.
	inline := func(mod func(map[string]string)) *csi.NodePublishVolumeRequest {
		r := pv(func(a map[string]string) { delete(a, attrEndpoint) })
		r.VolumeId = "csi-4b1d"
		r.VolumeContext[keyEphemeral] = "true"
		mod(r.VolumeContext)
		return r
	}
	set := func(k, v string) func(map[string]string) { return func(a map[string]string) { a[k] = v } }
	ctx := context.Background()

	type call func() error
	publish := func(r *csi.NodePublishVolumeRequest) call {
		return func() error { _, err := node.NodePublishVolume(ctx, r); return err }
	}
	create := func(params map[string]string) call {
		return func() error { _, err := controller.CreateVolume(ctx, createReq("pvc-hostile", params, 0)); return err }
	}
	del := func(id string) call {
		return func() error {
			_, err := controller.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
			return err
		}
	}
	validate := func(id string) call {
		return func() error {
			_, err := controller.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: id,
				VolumeCapabilities: []*csi.VolumeCapability{mountCapability(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)}})
			return err
		}
	}
	const uid = "pvc-0b5ce4e2-1a7c-4e6e-9d1f-2b7a3c4d5e6f"
	tests := []struct {
		name string
		call call
		attr string // the attribute the refusal must name
	}{
		{"PV cosEndpoint http trap", publish(pv(set(attrEndpoint, trapURL))), attrEndpoint},
		{"PV cosEndpoint https trap", publish(pv(set(attrEndpoint, "https://127.0.0.1:"+port))), attrEndpoint},
		{"PV cosEndpoint localhost", publish(pv(set(attrEndpoint, "https://localhost:"+port))), attrEndpoint},
		{"PV cosEndpoint IPv6 loopback", publish(pv(set(attrEndpoint, "http://[::1]:"+port))), attrEndpoint},
		{"PV cosEndpoint with user info", publish(pv(set(attrEndpoint, redirector.URL+"@127.0.0.1:"+port))), attrEndpoint},
		{"PV cosEndpoint allowed host, other path", publish(pv(set(attrEndpoint, env.COSURL+"/../x"))), attrEndpoint},
		{"PV iamEndpoint http trap", publish(pv(set(attrIAMEndpoint, trapURL))), attrIAMEndpoint},
		{"PV iamEndpoint https trap", publish(pv(set(attrIAMEndpoint, "https://127.0.0.1:"+port+"/identity/token"))), attrIAMEndpoint},
		{"PV iamEndpoint other namespace's service", publish(pv(set(attrIAMEndpoint, "http://iam.team-a.svc.cluster.local:"+port))), attrIAMEndpoint},
		{"PV iamEndpoint allowed host, trap port", publish(pv(set(attrIAMEndpoint, strings.Replace(redirector.URL, redirector.Listener.Addr().(*net.TCPAddr).AddrPort().String()[len("127.0.0.1:"):], port, 1)))), attrIAMEndpoint},
		{"PV iamEndpoint for HMAC volume", publish(pv(func(a map[string]string) {
			delete(a, attrProfileName)
			a[attrAuthType], a[attrIAMEndpoint] = "hmac", trapURL
		})), attrIAMEndpoint},
		{"inline cosEndpoint, even an allowed one", publish(inline(set(attrEndpoint, env.COSURL))), attrEndpoint},
		{"inline cosEndpoint trap", publish(inline(set(attrEndpoint, trapURL))), attrEndpoint},
		{"inline iamEndpoint trap", publish(inline(set(attrIAMEndpoint, trapURL))), attrIAMEndpoint},
		{"inline authType apiKey", publish(inline(func(a map[string]string) {
			delete(a, attrProfileName)
			a[attrAuthType] = "apiKey"
		})), attrAuthType},
		{"template path escape", publish(pv(set(attrProfileName, "../${pod.namespace}"))), attrProfileName},
		{"template nested", publish(pv(set(attrProfileName, "cosmount-${pod.${pod.namespace}}"))), attrProfileName},
		{"template unknown variable", publish(pv(set(attrProfileID, "${env.IAM_ENDPOINT}"))), attrProfileID},
		{"template URL", publish(pv(set(attrProfileName, "http://127.0.0.1:"+port+"/${pod.namespace}"))), attrProfileName},
		{"template in cosEndpoint", publish(pv(set(attrEndpoint, "http://${pod.namespace}.127.0.0.1.nip.io:"+port))), attrEndpoint},
		{"template with a forged namespace", publish(pv(func(a map[string]string) {
			a[attrProfileName], a[keyPodNamespace] = "cosmount-${pod.namespace}", "a/../../b"
		})), attrProfileName},
		{"inline template path escape", publish(inline(set(attrProfileName, "${pod.namespace}/../admin"))), attrProfileName},
		{"StorageClass cosEndpoint trap", create(map[string]string{attrEndpoint: trapURL, attrProfileName: "p"}), attrEndpoint},
		{"StorageClass iamEndpoint trap", create(map[string]string{attrIAMEndpoint: "https://127.0.0.1:" + port, attrProfileName: "p"}), attrIAMEndpoint},
		{"StorageClass template escape", create(map[string]string{attrProfileName: "${pod.namespace}/x"}), attrProfileName},
		{"DeleteVolume foreign endpoint", del("bucket:" + uid + "@" + trapURL), attrEndpoint},
		{"DeleteVolume foreign https endpoint", del("prefix:cosmount-shared/volumes/team-a@https://127.0.0.1:" + port), attrEndpoint},
		{"DeleteVolume foreign bucket", del("bucket:production-data@" + env.COSURL), attrBucket},
		{"DeleteVolume foreign bucket at IBM", del("bucket:payroll@ibm:us-south"), attrBucket},
		{"ValidateVolumeCapabilities foreign endpoint", validate("bucket:" + uid + "@" + trapURL), attrEndpoint},
	}
	for _, tc := range tests {
		err := tc.call()
		if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.attr) {
			t.Errorf("%s: %v, want InvalidArgument naming %s", tc.name, err, tc.attr)
		}
	}
	if n := mounter.mountN; n != 0 {
		t.Errorf("the mounter was asked to mount %d hostile volumes", n)
	}

	// Endpoints the admin allowed, answering with a redirect to the trap:
	// refused, never followed, whatever the request carried.
	redirects := []struct {
		name string
		call call
	}{
		{"publish through an IAM endpoint that redirects", publish(pv(set(attrIAMEndpoint, redirector.URL)))},
		{"CreateVolume at a COS endpoint that redirects", create(map[string]string{attrEndpoint: redirector.URL, attrProfileName: "p",
			attrServiceInstanceID: env.ServiceInstanceID})},
		{"DeleteVolume at a COS endpoint that redirects", del("bucket:" + uid + "@" + redirector.URL)},
	}
	for _, tc := range redirects {
		if err := tc.call(); err == nil {
			t.Errorf("%s: succeeded", tc.name)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
	if n := trap.count.Load(); n != 0 {
		t.Fatalf("the trap listener got %d connections, want 0", n)
	}
	// The trap does count: one connection of the test's own.
	c, err := net.Dial("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for trap.count.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := trap.count.Load(); n != 1 {
		t.Fatalf("the trap listener counted %d of the test's own connections, want 1", n)
	}
}
