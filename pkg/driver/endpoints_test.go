package driver

import (
	"strings"
	"testing"
)

func TestEndpointPolicy(t *testing.T) {
	cos, err := NewEndpointPolicy(attrEndpoint, false, "", DefaultAllowedCOSEndpoints, false)
	if err != nil {
		t.Fatal(err)
	}
	iam, err := NewEndpointPolicy(attrIAMEndpoint, true, "https://iam.cloud.ibm.com", DefaultAllowedIAMEndpoints, false)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		p    *EndpointPolicy
		url  string
		want string // "" allowed, else a substring of the refusal
	}{
		{cos, "https://s3.us-south.cloud-object-storage.appdomain.cloud", ""},
		{cos, "https://s3.us-south.cloud-object-storage.appdomain.cloud/", ""},
		{cos, "https://S3.EU-DE.cloud-object-storage.appdomain.cloud.", ""},
		{cos, "https://s3.private.eu-de.cloud-object-storage.appdomain.cloud", ""},
		{cos, "https://s3.direct.us-east.cloud-object-storage.appdomain.cloud:443", ""},
		{cos, "https://s3.us.cloud-object-storage.appdomain.cloud", ""},
		{cos, "http://s3.us-south.cloud-object-storage.appdomain.cloud", "plain http"},
		{cos, "https://s3.us-south.cloud-object-storage.appdomain.cloud:8443", "not one of"},
		{cos, "https://s3.us-south.cloud-object-storage.appdomain.cloud/other", "not one of"},
		{cos, "https://s3.a.b.cloud-object-storage.appdomain.cloud", "not one of"},
		{cos, "https://evil.s3.us-south.cloud-object-storage.appdomain.cloud", "not one of"},
		{cos, "https://s3.us-south.cloud-object-storage.appdomain.cloud.evil.com", "not one of"},
		{cos, "https://s3.us-south.cloud-object-storage.appdomain.cloud@evil.com", "credentials"},
		{cos, "https://user:pw@s3.us-south.cloud-object-storage.appdomain.cloud", "credentials"},
		{cos, "https://s3.us-south.cloud-object-storage.appdomain.cloud?x=1", "query"},
		{cos, "https://10.0.0.1", "not one of"},
		{cos, "https://[::1]:8443", "not one of"},
		{cos, "ftp://s3.us-south.cloud-object-storage.appdomain.cloud", "https"},
		{cos, "s3.us-south.cloud-object-storage.appdomain.cloud", "https"},
		{cos, "https://s3_x.us-south.cloud-object-storage.appdomain.cloud", "not a DNS name"},
		{iam, "https://iam.cloud.ibm.com", ""},
		{iam, "https://iam.cloud.ibm.com/identity/token", ""},
		{iam, "https://private.iam.cloud.ibm.com", ""},
		{iam, "https://private.us-south.iam.cloud.ibm.com", ""},
		{iam, "https://iam.test.cloud.ibm.com", "not one of"},
		{iam, "https://iam.cloud.ibm.com.evil.net", "not one of"},
		{iam, "http://iam.cloud.ibm.com", "plain http"},
	}
	for _, tc := range tests {
		err := tc.p.Check(tc.url)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s %s: refused: %v", tc.p.attr, tc.url, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s %s: %v, want a refusal mentioning %q", tc.p.attr, tc.url, err, tc.want)
		}
	}
	if _, err := cos.Resolve(""); err == nil || !strings.Contains(err.Error(), attrEndpoint) {
		t.Errorf("no endpoint and no default: %v", err)
	}
	if got, err := iam.Resolve(""); err != nil || got != "https://iam.cloud.ibm.com" {
		t.Errorf("default IAM endpoint: %q, %v", got, err)
	}
}

func TestEndpointPolicyConfiguration(t *testing.T) {
	bad := []struct {
		def     string
		allowed []string
		http    bool
		want    string
	}{
		{"http://127.0.0.1:8180", nil, false, "only https"},
		{"", []string{"http://127.0.0.1:8181"}, false, "only https"},
		{"", []string{"*.com"}, false, "last two host labels"},
		{"", []string{"s3.*x.example.com"}, false, "whole host label"},
		{"", []string{"https://user@example.com"}, false, "credentials"},
	}
	for _, tc := range bad {
		if _, err := NewEndpointPolicy(attrEndpoint, false, tc.def, tc.allowed, tc.http); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("default %q, allowed %q: %v, want an error mentioning %q", tc.def, tc.allowed, err, tc.want)
		}
	}
	// With the explicit flag, a local emulator is fine, and only the
	// configured port of it.
	p, err := NewEndpointPolicy(attrEndpoint, false, "http://127.0.0.1:8181", []string{"http://localhost:9000", "cos.example.com"}, true)
	if err != nil {
		t.Fatal(err)
	}
	for url, ok := range map[string]bool{
		"http://127.0.0.1:8181": true, "http://localhost:9000/": true, "https://cos.example.com": true,
		"http://127.0.0.1:8180": false, "http://127.0.0.2:8181": false, "http://cos.example.com": false, "https://localhost:9000": false,
	} {
		if err := p.Check(url); (err == nil) != ok {
			t.Errorf("%s: %v, want allowed=%v", url, err, ok)
		}
	}
}
