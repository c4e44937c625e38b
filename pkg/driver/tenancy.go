package driver

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Tenant policy: what a pod author may decide (inline volumes) and how one
// StorageClass or PV names a different trusted profile for every namespace
// or service account (templates), so that IAM, not the cluster, decides
// which workload reads which data.

// InlinePolicy is the admin's choice about ephemeral inline volumes, whose
// attributes any pod author writes into the pod spec.
type InlinePolicy struct {
	// Enabled allows inline volumes at all. Off by default: an inline volume
	// lets every pod author choose a bucket and a trusted profile, which is
	// only safe once IAM policies, not the cluster, confine every profile.
	Enabled bool
	// AllowedAttributes are the attributes a pod author may set; everything
	// else (endpoints, authType, anything that would need a secret) comes
	// from the admin's defaults.
	AllowedAttributes []string
}

// inlineSettable are the attributes an admin may hand to pod authors. The
// endpoints are never among them (they decide where the pod's token goes),
// nor authType (the fallbacks need secrets) or controller-only parameters.
var inlineSettable = []string{attrBucket, attrPrefix, attrRegion, attrProfileID, attrProfileName, attrProfileCRN}

// DefaultInlinePolicy: inline volumes off; when turned on, pod authors may
// choose the bucket, prefix, region and trusted profile.
func DefaultInlinePolicy() InlinePolicy {
	return InlinePolicy{AllowedAttributes: slices.Clone(inlineSettable)}
}

func (p *InlinePolicy) validate() error {
	for _, a := range p.AllowedAttributes {
		if !slices.Contains(inlineSettable, a) {
			return fmt.Errorf("--inline-volume-attributes: %q may not be given to pod authors (allowed: %s)", a, strings.Join(inlineSettable, ", "))
		}
	}
	return nil
}

// check refuses an inline volume the policy does not allow, naming the
// attribute. Only the pod's token may come with it: inline volumes never
// take a secret.
func (p *InlinePolicy) check(attrs, secrets map[string]string) error {
	if !p.Enabled {
		return status.Error(codes.InvalidArgument,
			"inline ephemeral volumes are disabled on this cluster (cosmount-csi --inline-volumes, Helm value inlineVolumes.enabled): use a PersistentVolumeClaim")
	}
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if strings.HasPrefix(k, k8sPrefix) || strings.HasPrefix(k, k8sStoragePrefix) {
			continue
		}
		if !slices.Contains(p.AllowedAttributes, k) {
			return status.Errorf(codes.InvalidArgument, "volume attribute %s: may not be set on an inline volume on this cluster (pod authors may set: %s)",
				k, strings.Join(p.AllowedAttributes, ", "))
		}
	}
	for k := range secrets {
		if k != keyTokens {
			return status.Errorf(codes.InvalidArgument, "inline volumes take no secrets (nodePublishSecretRef); found secret key %q", k)
		}
	}
	return nil
}

// Templates. A trusted profile attribute may name the profile after the
// pod's own identity, resolved at publish time from what kubelet says
// about the pod: "cosmount-${pod.namespace}" gives every namespace its own
// profile with one StorageClass, and IAM refuses a pod whose namespace's
// profile has no access.

// templateVars are the variables a template may use.
var templateVars = map[string]func(p *VolumeParams) string{
	"pod.namespace":      func(p *VolumeParams) string { return p.PodNamespace },
	"pod.serviceAccount": func(p *VolumeParams) string { return p.ServiceAccount },
}

// templated are the attributes that may hold a template.
var templated = []string{attrProfileID, attrProfileName}

var (
	// k8sNameRE: namespaces are DNS labels, service accounts DNS subdomains.
	k8sNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)
	// resolvedProfileRE is what a templated profile ID or name may resolve
	// to: no path or URL characters, no whitespace but spaces.
	resolvedProfileRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 _.:-]*$`)
)

// hasTemplate reports whether v uses template syntax at all.
func hasTemplate(v string) bool { return strings.ContainsAny(v, "${}") }

// parseTemplate splits v into literal text and variable names, refusing
// anything but well-formed ${name} references to known variables: no
// nesting, no stray '$', '{' or '}'.
func parseTemplate(v string) (lits []string, vars []string, err error) {
	var lit strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch c {
		case '$':
			if i+1 >= len(v) || v[i+1] != '{' {
				return nil, nil, fmt.Errorf("%q: '$' must start a variable such as ${pod.namespace}", v)
			}
			end := strings.IndexByte(v[i+2:], '}')
			if end < 0 {
				return nil, nil, fmt.Errorf("%q: unterminated ${", v)
			}
			name := v[i+2 : i+2+end]
			if strings.ContainsAny(name, "${") {
				return nil, nil, fmt.Errorf("%q: variables cannot be nested", v)
			}
			if _, ok := templateVars[name]; !ok {
				return nil, nil, fmt.Errorf("%q: unknown variable ${%s} (known: ${pod.namespace}, ${pod.serviceAccount})", v, name)
			}
			lits = append(lits, lit.String())
			lit.Reset()
			vars = append(vars, name)
			i += 2 + end
		case '{', '}':
			return nil, nil, fmt.Errorf("%q: '%c' outside a ${...} variable", v, c)
		default:
			lit.WriteByte(c)
		}
	}
	return append(lits, lit.String()), vars, nil
}

// checkTemplate validates the syntax of attribute attr's value at parse
// time (the controller passes templates through to the PV unresolved).
func checkTemplate(attr, v string) error {
	if !hasTemplate(v) {
		return nil
	}
	if !slices.Contains(templated, attr) {
		return invalid(attr, "%q: templates (${...}) are only supported in %s", v, strings.Join(templated, " and "))
	}
	lits, _, err := parseTemplate(v)
	if err != nil {
		return invalid(attr, "%v", err)
	}
	for _, l := range lits {
		if l != "" && !resolvedProfileRE.MatchString("x"+l) {
			return invalid(attr, "%q: only letters, digits, spaces and '_', '.', ':', '-' may surround the variables", v)
		}
	}
	return nil
}

// expandTemplate resolves attribute attr's template from the pod's identity.
func expandTemplate(attr, v string, p *VolumeParams) (string, error) {
	if !hasTemplate(v) {
		return v, nil
	}
	lits, vars, err := parseTemplate(v)
	if err != nil {
		return "", invalid(attr, "%v", err)
	}
	var b strings.Builder
	for i, name := range vars {
		val := templateVars[name](p)
		if val == "" {
			return "", status.Errorf(codes.FailedPrecondition,
				"volume attribute %s: %q needs ${%s}, which kubelet did not pass (the CSIDriver needs podInfoOnMount: true)", attr, v, name)
		}
		if !k8sNameRE.MatchString(val) {
			return "", invalid(attr, "%q: ${%s} = %q is not a Kubernetes name", v, name, val)
		}
		b.WriteString(lits[i])
		b.WriteString(val)
	}
	b.WriteString(lits[len(lits)-1])
	out := b.String()
	if !resolvedProfileRE.MatchString(out) {
		return "", invalid(attr, "%q resolves to %q, which is not a trusted profile ID or name", v, out)
	}
	return out, nil
}
