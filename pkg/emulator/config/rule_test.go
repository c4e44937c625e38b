package config

import (
	"strings"
	"testing"
)

func TestWildcardMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"volumes/team-a/*", "volumes/team-a/", true},
		{"volumes/team-a/*", "volumes/team-a/x/y.txt", true},
		{"volumes/team-a/*", "volumes/team-a-b/x", false},
		{"volumes/team-a/*", "volumes/team-a", false},
		{"volumes/*/data", "volumes/a/b/data", true},
		{"file?.txt", "file1.txt", true},
		{"file?.txt", "file10.txt", false},
		{"*", "", true},
		{"", "", true},
		{"", "x", false},
	} {
		if got := wildcardMatch(tc.pattern, tc.s); got != tc.want {
			t.Errorf("wildcardMatch(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

func TestRuleValidation(t *testing.T) {
	bad := map[string]Policy{
		"a rule needs a bucket":      {Role: RoleWriter, Rule: &AccessRule{Path: "a/*"}},
		"needs a path, a prefix":     {Role: RoleWriter, Bucket: "b", Rule: &AccessRule{}},
		"delimiters only apply with": {Role: RoleWriter, Bucket: "b", Rule: &AccessRule{Path: "a/*", Delimiters: []string{"/"}}},
	}
	for want, pol := range bad {
		c := Config{Profiles: []Profile{{ID: "Profile-x", Name: "x", Policies: []Policy{pol}}}}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v, want an error mentioning %q", pol, err, want)
		}
	}
	bucketOnly := AccessRule{BucketActions: true}
	p := Principal{Policies: []Policy{{Role: RoleWriter, Bucket: "b", Rule: &bucketOnly}}}
	if !p.Allows(ActionHeadBucket, "", "b", Resource{}) || p.Allows(ActionGetObject, "", "b", ObjectResource("k")) ||
		p.Allows(ActionListObjects, "", "b", ListResource("", nil)) {
		t.Error("a bucketActions-only rule must allow bucket-level actions and nothing on objects or listings")
	}
}
