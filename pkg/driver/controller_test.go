package driver

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/cosmount/cosmount/pkg/volume"
)

func createReq(name string, params map[string]string, capacity int64) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: capacity},
		VolumeCapabilities: []*csi.VolumeCapability{mountCapability(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)},
		Parameters:         params,
	}
}

func bucketParams() map[string]string {
	return map[string]string{
		attrEndpoint:           "http://127.0.0.1:8080",
		attrProfileID:          "Profile-writer",
		attrLocationConstraint: "us-south-smart",
		attrServiceInstanceID:  "instance-1",
		keyPVCName:             "data",
		keyPVCNamespace:        "default",
		keyPVName:              "pvc-1111",
	}
}

func TestCreateDeleteBucketVolume(t *testing.T) {
	p := startPlugin(t)
	ctx := context.Background()
	resp, err := p.controller.CreateVolume(ctx, createReq("pvc-1111", bucketParams(), 1<<30))
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	vol := resp.GetVolume()
	bucket := volumeBaseName("default", "data", "pvc-1111")
	if !strings.HasPrefix(bucket, "default-data-") || len(bucket) > 63 {
		t.Errorf("bucket name %q", bucket)
	}
	if vol.GetVolumeId() != "bucket:"+bucket+"@http://127.0.0.1:8080" || vol.GetCapacityBytes() != 1<<30 {
		t.Errorf("volume %v", vol)
	}
	wantCtx := map[string]string{attrBucket: bucket, attrEndpoint: "http://127.0.0.1:8080", attrAuthType: "trustedProfile",
		attrProfileID: "Profile-writer", attrServiceInstanceID: "instance-1"}
	if !mapsEqual(vol.GetVolumeContext(), wantCtx) {
		t.Errorf("volume context %v, want %v", vol.GetVolumeContext(), wantCtx)
	}
	if p.store.HeadBucket(ctx, bucket) != nil {
		t.Fatal("bucket not created")
	}
	if d := p.store.abortDays(bucket); d != abortIncompleteUploadsDays {
		t.Errorf("the new bucket's rule aborts incomplete uploads after %d days, want %d", d, abortIncompleteUploadsDays)
	}

	// The provisioner retries: same answer.
	again, err := p.controller.CreateVolume(ctx, createReq("pvc-1111", bucketParams(), 1<<30))
	if err != nil || again.GetVolume().GetVolumeId() != vol.GetVolumeId() {
		t.Errorf("repeated CreateVolume = %v, %v", again, err)
	}
	if _, err := p.controller.CreateVolume(ctx, createReq("pvc-1111", bucketParams(), 2<<30)); code(err) != codes.AlreadyExists {
		t.Errorf("CreateVolume with another capacity = %v, want AlreadyExists", err)
	}
	other := bucketParams()
	other[attrLocationConstraint] = "us-south-cold"
	if _, err := p.controller.CreateVolume(ctx, createReq("pvc-1111", other, 1<<30)); code(err) != codes.AlreadyExists {
		t.Errorf("CreateVolume with other parameters = %v, want AlreadyExists", err)
	}

	v, err := p.controller.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{
		VolumeId: vol.GetVolumeId(), VolumeCapabilities: []*csi.VolumeCapability{mountCapability(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)},
	})
	if err != nil || v.GetConfirmed() == nil {
		t.Errorf("ValidateVolumeCapabilities = %v, %v", v, err)
	}
	block := mountCapability(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	block.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
	v, err = p.controller.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: vol.GetVolumeId(), VolumeCapabilities: []*csi.VolumeCapability{block}})
	if err != nil || v.GetConfirmed() != nil || v.GetMessage() == "" {
		t.Errorf("ValidateVolumeCapabilities(block) = %v, %v", v, err)
	}

	for i := 0; i < 2; i++ {
		if _, err := p.controller.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol.GetVolumeId()}); err != nil {
			t.Fatalf("DeleteVolume #%d: %v", i+1, err)
		}
	}
	if p.store.HeadBucket(ctx, bucket) == nil {
		t.Error("bucket not deleted")
	}
	if _, err := p.controller.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{
		VolumeId: vol.GetVolumeId(), VolumeCapabilities: []*csi.VolumeCapability{block},
	}); code(err) != codes.NotFound {
		t.Errorf("ValidateVolumeCapabilities of a deleted volume = %v", err)
	}
	// After deletion the name is free again.
	if _, err := p.controller.CreateVolume(ctx, createReq("pvc-1111", other, 1<<30)); err != nil {
		t.Errorf("CreateVolume after delete: %v", err)
	}
}

func TestCreatePrefixVolume(t *testing.T) {
	p := startPlugin(t)
	ctx := context.Background()
	p.store.CreateBucket(ctx, "shared", "")
	p.store.PutObject(ctx, "shared", "other/keep.txt", nil, 0, cosPut())
	params := map[string]string{
		attrEndpoint:     "https://s3.us-south.cloud-object-storage.appdomain.cloud",
		attrBucket:       "shared",
		attrPrefix:       "vols",
		attrProvisioning: "prefix",
		attrProfileName:  "writer",
		attrIAMEndpoint:  "https://private.iam.cloud.ibm.com",
		keyPVCName:       "data",
		keyPVCNamespace:  "team-a",
	}
	resp, err := p.controller.CreateVolume(ctx, createReq("pvc-2222", params, 0))
	if err != nil {
		t.Fatal(err)
	}
	vol := resp.GetVolume()
	// One level per namespace, so that an IAM path condition
	// "vols/team-a/*" covers exactly team-a's volumes.
	prefix := prefixVolumePath("vols", "team-a", "data", "pvc-2222")
	if !strings.HasPrefix(prefix, "vols/team-a/data-") || strings.Count(prefix, "/") != 2 {
		t.Errorf("prefix %q, want vols/team-a/data-<hash>", prefix)
	}
	if vol.GetVolumeId() != "prefix:shared/"+prefix+"@ibm:us-south" {
		t.Errorf("volume ID %q", vol.GetVolumeId())
	}
	if vc := vol.GetVolumeContext(); vc[attrPrefix] != prefix || vc[attrBucket] != "shared" || vc[attrIAMEndpoint] != "https://private.iam.cloud.ibm.com" {
		t.Errorf("volume context %v", vc)
	}
	marker, err := p.store.HeadObject(ctx, "shared", prefix+"/")
	if err != nil || marker.Metadata[metaVolumeName] != "pvc-2222" {
		t.Fatalf("marker %v, %v", marker, err)
	}

	// A restarted controller (no memory) still answers idempotently from the marker.
	fresh, err := NewControllerService(testOptions(), &fakeStores{store: p.store})
	if err != nil {
		t.Fatal(err)
	}
	again, err := fresh.CreateVolume(ctx, createReq("pvc-2222", params, 0))
	if err != nil || again.GetVolume().GetVolumeId() != vol.GetVolumeId() {
		t.Errorf("CreateVolume after restart = %v, %v", again, err)
	}
	params[attrRegion] = "us-south"
	if _, err := fresh.CreateVolume(ctx, createReq("pvc-2222", params, 0)); code(toStatus(err)) != codes.AlreadyExists {
		t.Errorf("CreateVolume after restart with other parameters = %v, want AlreadyExists", err)
	}

	p.store.PutObject(ctx, "shared", prefix+"/a.txt", nil, 0, cosPut())
	p.store.PutObject(ctx, "shared", prefix+"/dir/b.txt", nil, 0, cosPut())
	p.store.PutObject(ctx, "shared", prefix+"-sibling/c.txt", nil, 0, cosPut())
	if _, err := p.controller.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol.GetVolumeId()}); err != nil {
		t.Fatal(err)
	}
	want := []string{"other/keep.txt", prefix + "-sibling/c.txt"}
	slices.Sort(want)
	if got := p.store.keys("shared"); !slices.Equal(got, want) {
		t.Errorf("after DeleteVolume the bucket holds %q, want %q", got, want)
	}
}

func TestCreateVolumeErrors(t *testing.T) {
	tests := []struct {
		name   string
		req    func() *csi.CreateVolumeRequest
		want   codes.Code
		substr string
	}{
		{"no name", func() *csi.CreateVolumeRequest { return createReq("", bucketParams(), 0) }, codes.InvalidArgument, "name"},
		{"no capabilities", func() *csi.CreateVolumeRequest {
			r := createReq("v", bucketParams(), 0)
			r.VolumeCapabilities = nil
			return r
		}, codes.InvalidArgument, "capabilities"},
		{"no endpoint", func() *csi.CreateVolumeRequest {
			p := bucketParams()
			delete(p, attrEndpoint)
			return createReq("v", p, 0)
		}, codes.InvalidArgument, attrEndpoint},
		{"unknown parameter", func() *csi.CreateVolumeRequest {
			p := bucketParams()
			p["storageClass"] = "smart"
			return createReq("v", p, 0)
		}, codes.InvalidArgument, "storageClass"},
		{"bucket mode with bucketName", func() *csi.CreateVolumeRequest {
			p := bucketParams()
			p[attrBucket], p[attrProvisioning] = "mine", "bucket"
			return createReq("v", p, 0)
		}, codes.InvalidArgument, attrBucket},
		{"prefix mode without bucket", func() *csi.CreateVolumeRequest {
			p := bucketParams()
			delete(p, attrLocationConstraint)
			p[attrProvisioning] = "prefix"
			return createReq("v", p, 0)
		}, codes.InvalidArgument, attrBucket},
		{"prefix mode in a missing bucket", func() *csi.CreateVolumeRequest {
			p := bucketParams()
			delete(p, attrLocationConstraint)
			p[attrBucket] = "missing"
			return createReq("v", p, 0)
		}, codes.InvalidArgument, "does not exist"},
		{"bad location", func() *csi.CreateVolumeRequest {
			p := bucketParams()
			p[attrLocationConstraint] = "US South"
			return createReq("v", p, 0)
		}, codes.InvalidArgument, attrLocationConstraint},
		{"bucket name taken by someone else", func() *csi.CreateVolumeRequest {
			return createReq("taken-name", map[string]string{attrEndpoint: "http://127.0.0.1:1", attrProfileID: "P"}, 0)
		}, codes.AlreadyExists, "taken"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startPlugin(t)
			p.store.foreign["taken-name"] = true
			_, err := p.controller.CreateVolume(context.Background(), tc.req())
			if code(err) != tc.want || !strings.Contains(err.Error(), tc.substr) {
				t.Errorf("CreateVolume = %v, want %v containing %q", err, tc.want, tc.substr)
			}
		})
	}
}

func TestDeleteAndValidateUnknownVolumes(t *testing.T) {
	p := startPlugin(t)
	ctx := context.Background()
	for _, id := range []string{"some-static-pv", "bucket:UPPER@http://x", "prefix:b/../x@http://127.0.0.1:1", "bucket:gone-bucket-0123456789abcdef@http://127.0.0.1:1"} {
		if _, err := p.controller.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
			t.Errorf("DeleteVolume(%q) = %v, want success", id, err)
		}
	}
	if got := p.store.keys("gone-bucket-0123456789abcdef"); len(got) != 0 {
		t.Error("store changed")
	}
	_, err := p.controller.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{
		VolumeId: "some-static-pv", VolumeCapabilities: []*csi.VolumeCapability{mountCapability(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)},
	})
	if code(err) != codes.NotFound {
		t.Errorf("ValidateVolumeCapabilities(unknown) = %v", err)
	}
	if _, err := p.controller.DeleteVolume(ctx, &csi.DeleteVolumeRequest{}); code(err) != codes.InvalidArgument {
		t.Errorf("DeleteVolume without ID = %v", err)
	}
	caps, err := p.controller.ControllerGetCapabilities(ctx, &csi.ControllerGetCapabilitiesRequest{})
	if err != nil || len(caps.GetCapabilities()) != 1 || caps.GetCapabilities()[0].GetRpc().GetType() != csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME {
		t.Errorf("ControllerGetCapabilities = %v, %v", caps, err)
	}
	if _, err := p.controller.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{}); code(err) != codes.Unimplemented {
		t.Errorf("ControllerPublishVolume = %v", err)
	}
}

func TestVolumeIDs(t *testing.T) {
	tests := []struct {
		id     string
		ok     bool
		bucket string
		prefix string
		ep     string
	}{
		{"bucket:my-bucket@ibm:us-south", true, "my-bucket", "", "https://s3.us-south.cloud-object-storage.appdomain.cloud"},
		{"bucket:my-bucket@ibm:direct.eu-de", true, "my-bucket", "", "https://s3.direct.eu-de.cloud-object-storage.appdomain.cloud"},
		{"prefix:shared/a/b@http://127.0.0.1:9000", true, "shared", "a/b", "http://127.0.0.1:9000"},
		{"prefix:shared@http://127.0.0.1:9000", false, "", "", ""},
		{"prefix:shared/a//b@http://127.0.0.1:9000", false, "", "", ""},
		{"bucket:my-bucket", false, "", "", ""},
		{"bucket:my-bucket@ftp://x", false, "", "", ""},
		{"volume:x@http://e", false, "", "", ""},
		{"pvc-1234", false, "", "", ""},
	}
	for _, tc := range tests {
		ref, ok := parseVolumeID(tc.id)
		if ok != tc.ok || ref.bucket != tc.bucket || ref.prefix != tc.prefix || ref.endpoint != tc.ep {
			t.Errorf("parseVolumeID(%q) = %+v, %v", tc.id, ref, ok)
		}
	}
	for _, ep := range []string{"https://s3.us-south.cloud-object-storage.appdomain.cloud", "http://127.0.0.1:1", "https://s3.example.com"} {
		if got := expandEndpoint(compactEndpoint(ep)); got != ep {
			t.Errorf("endpoint %q round-trips to %q", ep, got)
		}
	}
}

func TestVolumeBaseName(t *testing.T) {
	long := strings.Repeat("n", 80)
	tests := []struct {
		ns, pvc, vol string
		check        func(string) bool
	}{
		{"", "", "pvc-6f1c2a2e-3b1c-4c1e-9f1e-0a1b2c3d4e5f", func(s string) bool { return s == "pvc-6f1c2a2e-3b1c-4c1e-9f1e-0a1b2c3d4e5f" }},
		{"", "", "Sanity_Volume.1", func(s string) bool { return strings.HasPrefix(s, "sanity-volume-1-") }},
		{"Team_A", "Data.Vol", "pvc-1", func(s string) bool { return strings.HasPrefix(s, "team-a-data-vol-") }},
		{long, long, "pvc-2", func(s string) bool { return len(s) == 63 }},
	}
	for _, tc := range tests {
		got := volumeBaseName(tc.ns, tc.pvc, tc.vol)
		if !tc.check(got) || volume.CheckBucket(got) != nil {
			t.Errorf("volumeBaseName(%q, %q, %q) = %q", tc.ns, tc.pvc, tc.vol, got)
		}
	}
	if volumeBaseName("a", "b", "pvc-1") == volumeBaseName("a", "b", "pvc-2") {
		t.Error("two volumes of the same PVC name get the same bucket")
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
