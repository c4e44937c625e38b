package driver

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
)

func TestTemplates(t *testing.T) {
	pod := &VolumeParams{PodNamespace: "team-a", ServiceAccount: "reporter"}
	good := map[string]string{
		"cosmount-${pod.namespace}":                          "cosmount-team-a",
		"${pod.namespace}-${pod.serviceAccount}":             "team-a-reporter",
		"Profile for ${pod.namespace}.${pod.serviceAccount}": "Profile for team-a.reporter",
		"plain-name": "plain-name",
	}
	for in, want := range good {
		if err := checkTemplate(attrProfileName, in); err != nil {
			t.Errorf("checkTemplate(%q): %v", in, err)
		}
		if got, err := expandTemplate(attrProfileName, in, pod); err != nil || got != want {
			t.Errorf("expandTemplate(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := map[string]string{
		"cosmount-${pod.namespace":                     "unterminated",
		"cosmount-${pod.${pod.namespace}}":             "nested",
		"cosmount-${${pod.namespace}}":                 "nested",
		"cosmount-${pod.name}":                         "unknown variable",
		"cosmount-${env.HOME}":                         "unknown variable",
		"cosmount-$pod.namespace":                      "'$'",
		"cosmount-$(id)":                               "'$'",
		"cosmount-{pod.namespace}":                     "outside",
		"../${pod.namespace}":                          "may surround",
		"${pod.namespace}/../../etc":                   "may surround",
		"a\\b-${pod.namespace}":                        "may surround",
		"${pod.namespace}\n${pod.namespace}":           "may surround",
		"https://evil/${pod.serviceAccount}":           "may surround",
		"cosmount-${pod.namespace}?x=${pod.namespace}": "may surround",
	}
	for in, want := range bad {
		err := checkTemplate(attrProfileName, in)
		if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), attrProfileName) || !strings.Contains(err.Error(), want) {
			t.Errorf("checkTemplate(%q) = %v, want InvalidArgument naming %s and mentioning %q", in, err, attrProfileName, want)
		}
	}
	for _, attr := range []string{attrBucket, attrPrefix, attrProfileCRN, attrEndpoint, attrIAMEndpoint} {
		if err := checkTemplate(attr, "x-${pod.namespace}"); code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), attr) {
			t.Errorf("template in %s: %v, want InvalidArgument naming it", attr, err)
		}
	}
	// Resolution needs the pod's identity, and takes it only in the form
	// Kubernetes names have.
	if _, err := expandTemplate(attrProfileID, "p-${pod.namespace}", &VolumeParams{}); code(err) != codes.FailedPrecondition {
		t.Errorf("no pod info: %v, want FailedPrecondition", err)
	}
	if _, err := expandTemplate(attrProfileID, "p-${pod.namespace}", &VolumeParams{PodNamespace: "a/../b"}); code(err) != codes.InvalidArgument {
		t.Errorf("namespace with path characters: %v, want InvalidArgument", err)
	}
}

func TestInlinePolicyValidation(t *testing.T) {
	for _, attrs := range [][]string{{attrEndpoint}, {attrIAMEndpoint}, {attrAuthType}, {attrBucket, "serviceInstanceID"}} {
		p := InlinePolicy{Enabled: true, AllowedAttributes: attrs}
		if err := p.validate(); err == nil || !strings.Contains(err.Error(), "--inline-volume-attributes") {
			t.Errorf("allowing %v to pod authors: %v, want a refusal", attrs, err)
		}
	}
	if p := DefaultInlinePolicy(); p.Enabled || p.validate() != nil {
		t.Errorf("default inline policy %+v: want disabled and valid", p)
	}
}
