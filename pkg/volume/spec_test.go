package volume

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func testSpec() Spec {
	o := DefaultOptions()
	o.UID, o.AllowOther = 1000, true
	return Spec{
		VolumeID: "pv-1", Target: "/var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/pv-1/mount",
		Bucket: "my-bucket", Prefix: "team/a", Endpoint: "https://s3.us-south.cloud-object-storage.appdomain.cloud",
		Region: "us-south", IAMEndpoint: "https://iam.cloud.ibm.com",
		Auth: AuthTrustedProfile, Profile: Profile{ID: "Profile-1"}, Options: o,
	}
}

func TestSpecValidate(t *testing.T) {
	if s := testSpec(); s.Validate() != nil {
		t.Fatalf("valid spec refused: %v", s.Validate())
	}
	for _, tc := range []struct {
		field  string
		mutate func(*Spec)
	}{
		{"volumeID", func(s *Spec) { s.VolumeID = "" }},
		{"target", func(s *Spec) { s.Target = "relative" }},
		{"target", func(s *Spec) { s.Target = "/a/../b" }},
		{"bucketName", func(s *Spec) { s.Bucket = "Bad_Bucket" }},
		{"prefix", func(s *Spec) { s.Prefix = "a/../b" }},
		{"prefix", func(s *Spec) { s.Prefix = "/a/" }},
		{"cosEndpoint", func(s *Spec) { s.Endpoint = "ftp://x" }},
		{"cosEndpoint", func(s *Spec) { s.Endpoint = "https://user:pw@x" }},
		{"region", func(s *Spec) { s.Region = "US South" }},
		{"trustedProfileID", func(s *Spec) { s.Profile = Profile{} }},
		{"trustedProfileID", func(s *Spec) { s.Profile = Profile{ID: "a", Name: "b"} }},
		{"authType", func(s *Spec) { s.Auth = AuthHMAC }},
		{"authType", func(s *Spec) { s.Auth = "kerberos" }},
		{"iamEndpoint", func(s *Spec) { s.IAMEndpoint = "" }},
		{"part_size", func(s *Spec) { s.Options.PartSize = MiB }},
		{"options", func(s *Spec) { s.Options.TempDir = "/tmp" }},
	} {
		s := testSpec()
		tc.mutate(&s)
		err := s.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: Validate = %v, want an error naming it", tc.field, err)
		}
	}
	s := testSpec()
	s.Auth, s.Profile, s.IAMEndpoint = AuthHMAC, Profile{}, ""
	if err := s.Validate(); err != nil {
		t.Errorf("HMAC spec without IAM endpoint refused: %v", err)
	}
}

func TestSpecJSON(t *testing.T) {
	s := testSpec()
	s.Options.PartSize = 16 * MiB
	data, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"options":"uid=1000,allow_other,part_size=16MiB"`) {
		t.Errorf("options not in their Encode form: %s", data)
	}
	var back Spec
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, s) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, s)
	}
	// A node-scope option cannot be smuggled in through the wire form.
	bad := strings.Replace(string(data), `"options":"`, `"options":"temp_dir=/etc,`, 1)
	var oe *OptionError
	if err := json.Unmarshal([]byte(bad), &back); !errors.As(err, &oe) || oe.Option != "temp_dir" {
		t.Errorf("temp_dir over the wire: %v, want an OptionError naming it", err)
	}
}

func TestSpecEquivalent(t *testing.T) {
	a, b := testSpec(), testSpec()
	if !a.Equivalent(&b) || len(a.Differences(&b)) != 0 {
		t.Fatal("identical specs differ")
	}
	// The wire form of b lists options in another order with an explicit default.
	var c Spec
	data, _ := json.Marshal(b)
	data = []byte(strings.Replace(string(data), `"options":"uid=1000,allow_other"`, `"options":"allow_other,part_size=8MiB,uid=1000"`, 1))
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	if !a.Equivalent(&c) {
		t.Errorf("order and explicit defaults made specs differ: %v", a.Differences(&c))
	}
	b.Options.ReadOnly = true
	b.Bucket = "other-bucket"
	if a.Equivalent(&b) {
		t.Fatal("different specs are equivalent")
	}
	if got := a.Differences(&b); !reflect.DeepEqual(got, []string{"bucketName", "mount options"}) {
		t.Errorf("Differences = %v", got)
	}
}

func TestSpecArgs(t *testing.T) {
	s := testSpec()
	args := s.Args("/state/x/token", Options{TempDir: "/var/tmp/cosmount"}, "--control-socket", "/state/x/control.sock")
	want := []string{"mount", "--foreground", "--endpoint", s.Endpoint, "--region", "us-south",
		"--iam-endpoint", s.IAMEndpoint, "--trusted-profile-id", "Profile-1", "--cr-token-file", "/state/x/token",
		"--control-socket", "/state/x/control.sock",
		"-o", "uid=1000,allow_other,temp_dir=/var/tmp/cosmount", "my-bucket:/team/a", s.Target}
	if !reflect.DeepEqual(args, want) {
		t.Errorf("Args =\n%q\nwant\n%q", args, want)
	}
	s.Auth, s.Profile, s.Prefix = AuthHMAC, Profile{}, ""
	args = s.Args("/state/x/hmac", Options{})
	joined := strings.Join(args, " ")
	if strings.Contains(joined, "iam-endpoint") || !strings.Contains(joined, "--hmac-credentials-file /state/x/hmac") || !strings.HasSuffix(joined, "my-bucket "+s.Target) {
		t.Errorf("HMAC args %q", args)
	}
}

func TestCredentials(t *testing.T) {
	c := Credentials{CRToken: "eyJ.secret.token", APIKey: "key-123", AccessKeyID: "AK", SecretAccessKey: "SK"}
	for _, s := range []string{c.String(), c.GoString()} {
		if strings.Contains(s, "secret") || strings.Contains(s, "key-123") || strings.Contains(s, "SK") {
			t.Errorf("formatted credentials leak: %s", s)
		}
	}
	if got := string(CredentialFileContent(AuthHMAC, c)); got != "AK:SK\n" {
		t.Errorf("HMAC file %q", got)
	}
	if c.Digest(AuthTrustedProfile) == (Credentials{CRToken: "other"}).Digest(AuthTrustedProfile) {
		t.Error("different tokens share a digest")
	}
	if c.Digest(AuthTrustedProfile) != (Credentials{CRToken: c.CRToken}).Digest(AuthTrustedProfile) {
		t.Error("the digest depends on fields the method does not use")
	}
	for auth, bad := range map[AuthType]Credentials{
		AuthTrustedProfile: {},
		AuthAPIKey:         {APIKey: "a\nb"},
		AuthHMAC:           {AccessKeyID: "a:b", SecretAccessKey: "s"},
	} {
		if err := bad.Validate(auth); err == nil {
			t.Errorf("%s: bad credentials accepted", auth)
		}
	}
}

// FuzzSpecJSON: any wire form either fails to decode or decodes to a spec
// that survives a second encode and decode unchanged; Validate never panics.
func FuzzSpecJSON(f *testing.F) {
	good, _ := json.Marshal(testSpec())
	f.Add(string(good))
	f.Add(`{"volumeID":"v","target":"/t","bucket":"b-1","endpoint":"http://x","auth":"hmac","options":"ro,uid=1"}`)
	f.Add(`{"options":"temp_dir=/x"}`)
	f.Add(`null`)
	f.Fuzz(func(t *testing.T, data string) {
		var s Spec
		if err := json.Unmarshal([]byte(data), &s); err != nil {
			return
		}
		_ = s.Validate()
		again, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var back Spec
		if err := json.Unmarshal(again, &back); err != nil {
			t.Fatalf("decode of our own encoding %s: %v", again, err)
		}
		if !back.Equivalent(&s) {
			t.Fatalf("round trip changed the spec: %s", again)
		}
	})
}

// A volume may lower its temporary space, never raise it past the node's
// maximum or leave it unbounded.
func TestSpecArgsTempLimit(t *testing.T) {
	node := Options{TempLimit: 1 * GiB}
	for _, tc := range []struct {
		volume int64
		want   string
	}{
		{0, "temp_limit=1GiB"},
		{256 * MiB, "temp_limit=256MiB"},
		{4 * GiB, "temp_limit=1GiB"},
	} {
		s := testSpec()
		s.Options.TempLimit = tc.volume
		args := strings.Join(s.Args("/state/x/token", node), " ")
		if !strings.Contains(args, tc.want) {
			t.Errorf("volume temp_limit %d under a node maximum of 1GiB: args %q lack %s", tc.volume, args, tc.want)
		}
	}
	o := DefaultOptions()
	if err := o.Apply("temp_limit=64MiB", ScopeVolume); err != nil || o.TempLimit != 64*MiB {
		t.Errorf("temp_limit as a volume option: %v, %d", err, o.TempLimit)
	}
}
