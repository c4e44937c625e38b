package driver

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cosmount/cosmount/pkg/volume"
)

func TestParseVolumeParams(t *testing.T) {
	base := func() map[string]string {
		return map[string]string{attrBucket: "my-bucket", attrEndpoint: "https://s3.us-south.cloud-object-storage.appdomain.cloud", attrProfileID: "Profile-1"}
	}
	tests := []struct {
		name   string
		modify func(map[string]string)
		attr   string // empty: valid
		check  func(VolumeParams) bool
	}{
		{name: "minimal", modify: func(map[string]string) {}, check: func(p VolumeParams) bool {
			return p.AuthType == volume.AuthTrustedProfile && p.ProfileID == "Profile-1" && p.Bucket == "my-bucket"
		}},
		{name: "everything", modify: func(m map[string]string) {
			m[attrPrefix] = "/a/b/"
			m[attrRegion] = "us-south"
			m[attrIAMEndpoint] = "https://private.iam.cloud.ibm.com"
			m[attrLocationConstraint] = "us-south-smart"
			m[attrServiceInstanceID] = "crn:v1:bluemix:public:cloud-object-storage:global:a/1:2::"
			m[attrProvisioning] = "prefix"
			m[keyEphemeral] = "true"
			m[keyPodName], m[keyPodNamespace], m[keySAName] = "p", "ns", "sa"
			m[k8sPrefix+"some.future.key"] = "ignored"
		}, check: func(p VolumeParams) bool {
			return p.Prefix == "a/b" && p.Region == "us-south" && p.Ephemeral && p.PodNamespace == "ns" && p.Provisioning == "prefix"
		}},
		{name: "csi-provisioner's own attribute", modify: func(m map[string]string) {
			m[k8sStoragePrefix+"csiProvisionerIdentity"] = "1764336000000-8081-cosmount.csi.io"
		}, check: func(p VolumeParams) bool { return p.Bucket == "my-bucket" }},
		{name: "api key", modify: func(m map[string]string) { delete(m, attrProfileID); m[attrAuthType] = "apiKey" },
			check: func(p VolumeParams) bool { return p.AuthType == volume.AuthAPIKey }},
		{name: "unknown attribute", modify: func(m map[string]string) { m["bucketname"] = "x" }, attr: "bucketname"},
		{name: "bad bucket", modify: func(m map[string]string) { m[attrBucket] = "My_Bucket" }, attr: attrBucket},
		{name: "short bucket", modify: func(m map[string]string) { m[attrBucket] = "ab" }, attr: attrBucket},
		{name: "bad endpoint", modify: func(m map[string]string) { m[attrEndpoint] = "s3.example.com" }, attr: attrEndpoint},
		{name: "endpoint with credentials", modify: func(m map[string]string) { m[attrEndpoint] = "https://user:pw@s3.example.com" }, attr: attrEndpoint},
		{name: "bad IAM endpoint", modify: func(m map[string]string) { m[attrIAMEndpoint] = "ftp://iam" }, attr: attrIAMEndpoint},
		{name: "bad auth type", modify: func(m map[string]string) { m[attrAuthType] = "oauth" }, attr: attrAuthType},
		{name: "two profiles", modify: func(m map[string]string) { m[attrProfileName] = "n" }, attr: attrProfileID},
		{name: "no profile", modify: func(m map[string]string) { delete(m, attrProfileID) }, attr: attrProfileID},
		{name: "profile with hmac", modify: func(m map[string]string) { m[attrAuthType] = "hmac" }, attr: attrAuthType},
		{name: "prefix escapes", modify: func(m map[string]string) { m[attrPrefix] = "a/../b" }, attr: attrPrefix},
		{name: "bad region", modify: func(m map[string]string) { m[attrRegion] = "US South" }, attr: attrRegion},
		{name: "bad provisioning", modify: func(m map[string]string) { m[attrProvisioning] = "volume" }, attr: attrProvisioning},
		{name: "bad ephemeral", modify: func(m map[string]string) { m[keyEphemeral] = "yes please" }, attr: keyEphemeral},
		{name: "bad service instance", modify: func(m map[string]string) { m[attrServiceInstanceID] = "a b" }, attr: attrServiceInstanceID},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := base()
			tc.modify(m)
			p, err := parseVolumeParams(m)
			if tc.attr == "" {
				if err != nil || !tc.check(p) {
					t.Errorf("parseVolumeParams = %+v, %v", p, err)
				}
				return
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.attr) {
				t.Errorf("parseVolumeParams = %v, want InvalidArgument naming %s", err, tc.attr)
			}
		})
	}
}

func TestParseMountFlags(t *testing.T) {
	tests := []struct {
		flags []string
		want  string // Encode of the result
		bad   string
	}{
		{flags: nil, want: ""},
		{flags: []string{"uid=1000,gid=1000", "file-mode=0640", "dir_mode=750", "allow_other", "rw"},
			want: "uid=1000,gid=1000,file_mode=0640,dir_mode=0750,allow_other"},
		{flags: []string{"ro", "attr_ttl=1m", "entry-ttl=0s", "negative_ttl=500ms", "part_size=16MiB", "memory_limit=1G", "upload_concurrency=4"},
			want: "ro,attr_ttl=1m0s,entry_ttl=0s,negative_ttl=500ms,part_size=16MiB,memory_limit=1GiB"},
		{flags: []string{"part_size=16Mi", "readahead_max=1TB"}, want: "part_size=16MiB,readahead_max=1TB"},
		{flags: []string{"uid=-1"}, bad: "uid"},
		{flags: []string{"file_mode=0999"}, bad: "file_mode"},
		{flags: []string{"file_mode=01777"}, bad: "file_mode"},
		{flags: []string{"attr_ttl=-1s"}, bad: "attr_ttl"},
		{flags: []string{"part_size=lots"}, bad: "part_size"},
		{flags: []string{"part_size=1TB"}, bad: "part_size"},
		{flags: []string{"upload_concurrency=0"}, bad: "upload_concurrency"},
		{flags: []string{"upload_concurrency=100"}, bad: "upload_concurrency"},
		{flags: []string{"memory_limit=8MiB"}, bad: "memory_limit"},
		{flags: []string{"temp_dir=/etc"}, bad: "temp_dir"},
		{flags: []string{"prefix=other"}, bad: "prefix"},
		{flags: []string{"noatime"}, bad: "noatime"},
		{flags: []string{"ro=1"}, bad: "ro=\"1\""},
	}
	for _, tc := range tests {
		o, err := parseMountFlags(tc.flags)
		if tc.bad != "" {
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.bad) {
				t.Errorf("parseMountFlags(%q) = %v, want InvalidArgument naming %s", tc.flags, err, tc.bad)
			}
			continue
		}
		if err != nil || o.Encode() != tc.want {
			t.Errorf("parseMountFlags(%q) = %q, %v; want %q", tc.flags, o.Encode(), err, tc.want)
		}
	}
}

func TestParamsFingerprint(t *testing.T) {
	a := map[string]string{attrEndpoint: "http://e", attrProfileID: "P", keyPVCName: "x"}
	b := map[string]string{attrProfileID: "P", attrEndpoint: "http://e", keyPVCName: "y"}
	if paramsFingerprint(a, 1) != paramsFingerprint(b, 1) {
		t.Error("Kubernetes-added keys or map order change the fingerprint")
	}
	if paramsFingerprint(a, 1) == paramsFingerprint(a, 2) {
		t.Error("capacity does not change the fingerprint")
	}
	b[attrRegion] = "us"
	if paramsFingerprint(a, 1) == paramsFingerprint(b, 1) {
		t.Error("an added parameter does not change the fingerprint")
	}
}

func TestOptionsValidate(t *testing.T) {
	good := DefaultOptions()
	good.NodeID = "n"
	if err := good.Validate(); err != nil {
		t.Fatalf("defaults with a node ID: %v", err)
	}
	tests := []struct {
		name   string
		modify func(*Options)
		want   string
	}{
		{"tcp endpoint", func(o *Options) { o.Endpoint = "tcp://127.0.0.1:1" }, "unix"},
		{"relative socket", func(o *Options) { o.Endpoint = "csi.sock" }, "absolute"},
		{"mode", func(o *Options) { o.Mode = "both" }, "--mode"},
		{"node without ID", func(o *Options) { o.NodeID = "" }, "--node-id"},
		{"mounter over tcp", func(o *Options) { o.MounterEndpoint = "tcp://127.0.0.1:1" }, "--mounter-endpoint"},
		{"bad IAM", func(o *Options) { o.IAMEndpoint = "iam.cloud.ibm.com" }, "--iam-endpoint"},
		{"empty audience", func(o *Options) { o.TokenAudience = " " }, "--token-audience"},
	}
	for _, tc := range tests {
		o := good
		tc.modify(&o)
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate = %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
	ctrl := good
	ctrl.Mode, ctrl.NodeID = ModeController, ""
	if err := ctrl.Validate(); err != nil {
		t.Errorf("controller mode without node ID: %v", err)
	}
	for in, want := range map[string]string{"crn:v1:x": "crn:crn:v1:x", "Profile-9": "id:Profile-9", "writer": "name:writer"} {
		o := good
		o.ControllerProfile = in
		if got := o.controllerProfile().String(); got != want {
			t.Errorf("controllerProfile(%q) = %s, want %s", in, got, want)
		}
	}
}
