package driver

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Endpoints belong to the cluster admin: the plugin's flags name a default
// IAM and COS endpoint and what else a volume may pick, and every endpoint a
// volume, StorageClass or volume ID names is checked against that before any
// request is sent. A pod's token or the controller's credentials therefore
// only ever go where the admin allowed.

// IBM's own endpoints, allowed unless the admin replaces the lists: IAM's
// public and private endpoints, and COS's regional, cross-region and
// single-site endpoints on the public, private (classic) and direct (VPC)
// networks. A '*' stands for exactly one DNS label.
var (
	DefaultAllowedIAMEndpoints = []string{
		"https://iam.cloud.ibm.com",
		"https://private.iam.cloud.ibm.com",
		"https://private.*.iam.cloud.ibm.com",
	}
	DefaultAllowedCOSEndpoints = []string{
		"https://s3.*.cloud-object-storage.appdomain.cloud",
		"https://s3.private.*.cloud-object-storage.appdomain.cloud",
		"https://s3.direct.*.cloud-object-storage.appdomain.cloud",
	}
)

// endpointRule is one allow-list entry: a scheme, a host or host pattern, a
// port and a path, each compared exactly (the host label by label).
type endpointRule struct {
	scheme string
	labels []string // host labels; "*" matches one label
	port   string
	path   string
}

// endpointURL is a URL in the form rules compare.
type endpointURL struct {
	scheme, host, port, path string
	ip                       net.IP // set for an IP literal
}

var (
	hostLabelRE    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	patternLabelRE = regexp.MustCompile(`^(\*|[a-z0-9]([a-z0-9-]*[a-z0-9])?)$`)
)

// parseEndpointURL parses and normalizes an endpoint: http(s) only, no user
// info, query or fragment, a host that is a DNS name or an IP literal, the
// port made explicit, the path without trailing slash (and, for IAM,
// without /identity/token, which clients add).
func parseEndpointURL(raw string, iam bool) (endpointURL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return endpointURL{}, fmt.Errorf("%q is not a URL", raw)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return endpointURL{}, fmt.Errorf("%q is not an https URL", raw)
	}
	if u.User != nil {
		return endpointURL{}, fmt.Errorf("%q must not carry credentials", raw)
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" {
		return endpointURL{}, fmt.Errorf("%q must not have a query or fragment", raw)
	}
	e := endpointURL{scheme: u.Scheme, port: u.Port()}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if host == "" {
		return endpointURL{}, fmt.Errorf("%q has no host", raw)
	}
	if ip := net.ParseIP(host); ip != nil {
		e.ip = ip
		host = ip.String()
	} else {
		for _, l := range strings.Split(host, ".") {
			if !hostLabelRE.MatchString(l) {
				return endpointURL{}, fmt.Errorf("%q: host %q is not a DNS name or IP address", raw, host)
			}
		}
	}
	e.host = host
	if e.port == "" {
		e.port = map[string]string{"https": "443", "http": "80"}[e.scheme]
	}
	e.path = strings.TrimRight(u.EscapedPath(), "/")
	if iam {
		e.path = strings.TrimSuffix(e.path, "/identity/token")
	}
	return e, nil
}

// parseEndpointRule parses an allow-list entry: a URL ("https://iam.cloud.ibm.com")
// or a host ("s3.direct.*.cloud-object-storage.appdomain.cloud", meaning
// https on port 443), whose host labels may be "*".
func parseEndpointRule(entry string, iam bool) (endpointRule, error) {
	s := strings.TrimSpace(entry)
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	// A pattern's '*' is not a valid host character for url.Parse's
	// callers; swap it for a marker label while parsing.
	const marker = "x-wildcard-x"
	e, err := parseEndpointURL(strings.ReplaceAll(s, "*", marker), iam)
	if err != nil {
		return endpointRule{}, fmt.Errorf("allowed endpoint %q: %v", entry, strings.ReplaceAll(err.Error(), marker, "*"))
	}
	r := endpointRule{scheme: e.scheme, port: e.port, path: e.path}
	if e.ip != nil {
		r.labels = []string{e.host}
		return r, nil
	}
	for _, l := range strings.Split(e.host, ".") {
		if l == marker {
			l = "*"
		} else if strings.Contains(l, marker) || !patternLabelRE.MatchString(l) {
			return endpointRule{}, fmt.Errorf("allowed endpoint %q: '*' must stand for a whole host label", entry)
		}
		r.labels = append(r.labels, l)
	}
	if slices.Contains(r.labels, "*") && (len(r.labels) < 3 || r.labels[len(r.labels)-1] == "*" || r.labels[len(r.labels)-2] == "*") {
		return endpointRule{}, fmt.Errorf("allowed endpoint %q: the last two host labels must be literal", entry)
	}
	return r, nil
}

func (r endpointRule) matches(e endpointURL) bool {
	if r.scheme != e.scheme || r.port != e.port || r.path != e.path {
		return false
	}
	if e.ip != nil {
		return len(r.labels) == 1 && r.labels[0] == e.host
	}
	labels := strings.Split(e.host, ".")
	if len(labels) != len(r.labels) {
		return false
	}
	for i, l := range r.labels {
		if l != "*" && l != labels[i] {
			return false
		}
	}
	return true
}

// EndpointPolicy is the admin's rule for one kind of endpoint (IAM or COS):
// a default, the endpoints a volume may choose instead, and whether plain
// http is allowed at all.
type EndpointPolicy struct {
	attr      string // the volume attribute that picks an endpoint
	iam       bool
	def       string // normalized default; "" when none is configured
	rules     []endpointRule
	allowHTTP bool
}

// NewEndpointPolicy builds a policy. def may be empty (volumes must then
// name an endpoint); it is always allowed. An http default or entry is
// refused unless allowHTTP.
func NewEndpointPolicy(attr string, iam bool, def string, allowed []string, allowHTTP bool) (*EndpointPolicy, error) {
	p := &EndpointPolicy{attr: attr, iam: iam, allowHTTP: allowHTTP}
	for _, a := range allowed {
		if strings.TrimSpace(a) == "" {
			continue
		}
		r, err := parseEndpointRule(a, iam)
		if err != nil {
			return nil, err
		}
		if r.scheme == "http" && !allowHTTP {
			return nil, fmt.Errorf("allowed endpoint %q is plain http; only https is allowed without --allow-insecure-http", a)
		}
		p.rules = append(p.rules, r)
	}
	if def != "" {
		e, err := parseEndpointURL(def, iam)
		if err != nil {
			return nil, err
		}
		if e.scheme == "http" && !allowHTTP {
			return nil, fmt.Errorf("%q is plain http; only https is allowed without --allow-insecure-http", def)
		}
		p.def = strings.TrimRight(def, "/")
		p.rules = append(p.rules, endpointRule{scheme: e.scheme, labels: hostLabels(e), port: e.port, path: e.path})
	}
	return p, nil
}

func hostLabels(e endpointURL) []string {
	if e.ip != nil {
		return []string{e.host}
	}
	return strings.Split(e.host, ".")
}

// Default is the endpoint of volumes that name none ("" when none is set).
func (p *EndpointPolicy) Default() string { return p.def }

// Check reports why raw may not be used, or nil.
func (p *EndpointPolicy) Check(raw string) error {
	e, err := parseEndpointURL(raw, p.iam)
	if err != nil {
		return err
	}
	if e.scheme == "http" && !p.allowHTTP {
		return fmt.Errorf("%q is plain http; this cluster allows only https endpoints", raw)
	}
	for _, r := range p.rules {
		if r.matches(e) {
			return nil
		}
	}
	return fmt.Errorf("%q is not one of the endpoints this cluster allows (the admin's default and allow-list)", raw)
}

// Resolve returns the endpoint a volume uses: value if the policy allows
// it, the default when value is empty. A refusal is InvalidArgument naming
// the attribute, before anything was sent anywhere.
func (p *EndpointPolicy) Resolve(value string) (string, error) {
	if value == "" {
		if p.def == "" {
			return "", invalid(p.attr, "is required (the plugin has no default endpoint)")
		}
		return p.def, nil
	}
	if err := p.Check(value); err != nil {
		return "", invalid(p.attr, "%v", err)
	}
	return strings.TrimRight(value, "/"), nil
}
