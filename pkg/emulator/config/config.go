// Package config holds the emulator's configuration file format (issuers,
// trusted profiles with their trust and access policies, API keys, HMAC keys,
// service instances) and the access decisions derived from it. Both the IAM
// side and the COS side of the emulator read it; neither owns it.
package config

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Config is the whole emulator configuration. It is read from YAML or JSON.
type Config struct {
	// AccountID is the IBM account id put into minted access tokens.
	AccountID string `json:"accountID,omitempty"`
	// AccessTokenLifetime is the lifetime of access tokens IAM hands out
	// (Go duration, default 1h, minimum 1s).
	AccessTokenLifetime Duration `json:"accessTokenLifetime,omitempty"`
	// Issuers whose service-account tokens IAM accepts as cr_token.
	Issuers []Issuer `json:"issuers,omitempty"`
	// Profiles are the trusted profiles.
	Profiles []Profile `json:"profiles,omitempty"`
	// APIKeys are accepted by the apikey grant.
	APIKeys []APIKey `json:"apiKeys,omitempty"`
	// HMACKeys are accepted by COS as SigV4 credentials.
	HMACKeys []HMACKey `json:"hmacKeys,omitempty"`
	// ServiceInstances are the COS instances; bucket create/list require one of them.
	ServiceInstances []ServiceInstance `json:"serviceInstances,omitempty"`
	// Location is the location of the emulated COS endpoint, e.g. "us-south";
	// LocationConstraint values must start with it. Default "us-south".
	Location string `json:"location,omitempty"`
}

// Issuer is a Kubernetes service-account token issuer (a cluster).
type Issuer struct {
	// Cluster is the cluster id: the service_instance claim and the first part
	// of the "<cluster>:<namespace>:<serviceaccount>:<pod>" identifier.
	Cluster string `json:"cluster"`
	// ClusterCRN is matched by profile links that name a cluster by CRN.
	ClusterCRN string `json:"clusterCRN,omitempty"`
	// Issuer is the expected "iss" claim.
	Issuer string `json:"issuer"`
	// JWKSFile is a JSON Web Key Set file with the issuer's public keys, or
	// DiscoveryURL is the issuer base URL whose /.well-known/openid-configuration
	// names the JWKS (fetched, as kube-apiserver serves it). Exactly one is set.
	JWKSFile     string `json:"jwksFile,omitempty"`
	DiscoveryURL string `json:"discoveryURL,omitempty"`
	// DiscoveryCAFile and DiscoveryBearerTokenFile help fetch a TLS,
	// authenticated discovery endpoint (both optional).
	DiscoveryCAFile          string `json:"discoveryCAFile,omitempty"`
	DiscoveryBearerTokenFile string `json:"discoveryBearerTokenFile,omitempty"`
	// InsecureSkipTLSVerify skips TLS verification of the discovery endpoint (tests only).
	InsecureSkipTLSVerify bool `json:"insecureSkipTLSVerify,omitempty"`
	// Audiences accepted in "aud" (default ["iam"]).
	Audiences []string `json:"audiences,omitempty"`
	// ResourceGroupID, ResourceGroupName and Location are the values of those claims for rules.
	ResourceGroupID   string `json:"resourceGroupID,omitempty"`
	ResourceGroupName string `json:"resourceGroupName,omitempty"`
	Location          string `json:"location,omitempty"`
}

// Profile is a trusted profile.
type Profile struct {
	ID       string   `json:"id"`            // e.g. "Profile-1a2b..."
	Name     string   `json:"name"`          // unique within the account
	CRN      string   `json:"crn,omitempty"` // default crn:v1:bluemix:public:iam-identity::a/<account>::profile:<id>
	Links    []Link   `json:"links,omitempty"`
	Rules    []Rule   `json:"rules,omitempty"`
	Policies []Policy `json:"policies,omitempty"`
}

// Link trusts one service account of one namespace of one cluster.
type Link struct {
	CRType         string `json:"crType,omitempty"` // IKS_SA (default) or ROKS_SA
	Cluster        string `json:"cluster"`          // Issuer.Cluster or Issuer.ClusterCRN
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
}

// Rule is a Profile-CR claim rule: it matches when every condition matches.
type Rule struct {
	Name       string      `json:"name,omitempty"`
	Conditions []Condition `json:"conditions"`
}

// Condition compares one claim of the CR token.
// Claims: service_instance, namespace, name, pod, resource_group_id,
// resource_group_name, location. Operators: EQUALS, NOT_EQUALS,
// EQUALS_IGNORE_CASE, NOT_EQUALS_IGNORE_CASE, CONTAINS, IN (Value is a
// comma-separated list for IN).
type Condition struct {
	Claim    string `json:"claim"`
	Operator string `json:"operator"`
	Value    string `json:"value"`
}

// Policy grants a role on COS, to a whole service instance or to one bucket,
// optionally limited by IBM's attribute-based conditions (Rule).
type Policy struct {
	Role            Role   `json:"role"`
	ServiceInstance string `json:"serviceInstance,omitempty"` // empty: every instance
	Bucket          string `json:"bucket,omitempty"`          // empty: every bucket of the instance
	// Rule limits the policy to some objects of the bucket; nil grants the
	// role on every object.
	Rule *AccessRule `json:"rule,omitempty"`
}

// Role is an IBM COS service role.
type Role string

// The COS roles the emulator knows.
const (
	RoleReader       Role = "Reader"       // list, read objects, head bucket
	RoleObjectReader Role = "ObjectReader" // read objects only
	RoleObjectWriter Role = "ObjectWriter" // write objects only (IBM's "Object Writer")
	RoleWriter       Role = "Writer"       // read, write and delete objects
	RoleManager      Role = "Manager"      // Writer plus bucket create/delete
)

// APIKey is an IAM API key.
type APIKey struct {
	ID       string   `json:"id"` // e.g. "ApiKey-..."; the principal's id
	Name     string   `json:"name,omitempty"`
	Key      string   `json:"key,omitempty"` // the secret itself, or
	KeyFile  string   `json:"keyFile,omitempty"`
	Policies []Policy `json:"policies,omitempty"`
}

// HMACKey is a COS HMAC credential (SigV4).
type HMACKey struct {
	AccessKeyID         string   `json:"accessKeyID"`
	SecretAccessKey     string   `json:"secretAccessKey,omitempty"`
	SecretAccessKeyFile string   `json:"secretAccessKeyFile,omitempty"`
	ServiceInstance     string   `json:"serviceInstance,omitempty"`
	Policies            []Policy `json:"policies,omitempty"`
}

// ServiceInstance is a COS service instance.
type ServiceInstance struct {
	ID   string `json:"id"` // GUID sent as ibm-service-instance-id
	Name string `json:"name,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("1h", "2s").
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return []byte(`"` + d.String() + `"`), nil }

// UnmarshalJSON reads a Go duration string or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if v, err := time.ParseDuration(s); err == nil {
		d.Duration = v
		return nil
	}
	var secs float64
	if _, err := fmt.Sscanf(s, "%g", &secs); err != nil {
		return fmt.Errorf("duration %q: want a Go duration such as \"1h\" or \"2s\"", s)
	}
	d.Duration = time.Duration(secs * float64(time.Second))
	return nil
}

// PrincipalType says how a request was authenticated.
type PrincipalType string

// Principal types.
const (
	PrincipalProfile PrincipalType = "profile"
	PrincipalAPIKey  PrincipalType = "apikey"
	PrincipalHMAC    PrincipalType = "hmac"
)

// Principal is an authenticated caller of COS.
type Principal struct {
	Type     PrincipalType
	ID       string // profile id, API key id or HMAC access key id
	Name     string
	Policies []Policy
}

// Action is a COS operation subject to policy.
type Action string

// Actions.
const (
	ActionListBuckets  Action = "list-buckets"
	ActionCreateBucket Action = "create-bucket"
	ActionDeleteBucket Action = "delete-bucket"
	ActionHeadBucket   Action = "head-bucket" // also bucket location
	ActionListObjects  Action = "list-objects"
	ActionGetObject    Action = "get-object" // GET and HEAD
	ActionPutObject    Action = "put-object" // PUT, copy destination, multipart
	ActionDeleteObject Action = "delete-object"
)

var roleActions = map[Role][]Action{
	RoleReader:       {ActionListBuckets, ActionHeadBucket, ActionListObjects, ActionGetObject},
	RoleObjectReader: {ActionGetObject},
	RoleObjectWriter: {ActionPutObject},
	RoleWriter:       {ActionListBuckets, ActionHeadBucket, ActionListObjects, ActionGetObject, ActionPutObject, ActionDeleteObject},
	RoleManager:      {ActionListBuckets, ActionHeadBucket, ActionListObjects, ActionGetObject, ActionPutObject, ActionDeleteObject, ActionCreateBucket, ActionDeleteBucket},
}

// Allows reports whether the principal may do action on bucket (empty for
// account-level actions) of the service instance instance (empty if
// unknown), for the resource attributes res (see Resource).
func (p *Principal) Allows(action Action, instance, bucket string, res Resource) bool {
	for _, pol := range p.Policies {
		if !pol.grants(action, instance, bucket) {
			continue
		}
		if pol.Rule == nil || pol.Rule.matches(res) {
			return true
		}
	}
	return false
}

// AllowsSomeObjects reports whether a policy grants action on some objects
// of bucket, whatever its rule: a multi-object delete passes on this, and
// each of its keys is then checked with Allows.
func (p *Principal) AllowsSomeObjects(action Action, instance, bucket string) bool {
	for _, pol := range p.Policies {
		if pol.grants(action, instance, bucket) {
			return true
		}
	}
	return false
}

// AllowsEveryObject reports whether a policy without a rule grants action
// on bucket.
func (p *Principal) AllowsEveryObject(action Action, instance, bucket string) bool {
	for _, pol := range p.Policies {
		if pol.Rule == nil && pol.grants(action, instance, bucket) {
			return true
		}
	}
	return false
}

func (pol *Policy) grants(action Action, instance, bucket string) bool {
	if pol.ServiceInstance != "" && instance != "" && pol.ServiceInstance != instance {
		return false
	}
	if pol.Bucket != "" && pol.Bucket != bucket {
		return false
	}
	return slices.Contains(roleActions[pol.Role], action)
}

// Load reads and validates a configuration file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("emulator config: %w", err)
	}
	var c Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("emulator config %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("emulator config %s: %w", path, err)
	}
	return &c, nil
}

// Validate checks the configuration and fills in defaults.
func (c *Config) Validate() error {
	if c.AccessTokenLifetime.Duration == 0 {
		c.AccessTokenLifetime.Duration = time.Hour
	}
	if c.AccessTokenLifetime.Duration < time.Second {
		return fmt.Errorf("accessTokenLifetime %s: must be at least 1s", c.AccessTokenLifetime)
	}
	if c.Location == "" {
		c.Location = "us-south"
	}
	if c.AccountID == "" {
		c.AccountID = "cosmount-emulator-account"
	}
	for i := range c.Issuers {
		is := &c.Issuers[i]
		if is.Cluster == "" || is.Issuer == "" {
			return fmt.Errorf("issuers[%d]: cluster and issuer are required", i)
		}
		if (is.JWKSFile == "") == (is.DiscoveryURL == "") {
			return fmt.Errorf("issuers[%d] (%s): set exactly one of jwksFile and discoveryURL", i, is.Cluster)
		}
		if len(is.Audiences) == 0 {
			is.Audiences = []string{"iam"}
		}
	}
	seen := map[string]bool{}
	for i := range c.Profiles {
		p := &c.Profiles[i]
		if p.ID == "" || p.Name == "" {
			return fmt.Errorf("profiles[%d]: id and name are required", i)
		}
		if seen[p.ID] || seen["name:"+p.Name] {
			return fmt.Errorf("profiles[%d]: duplicate id %q or name %q", i, p.ID, p.Name)
		}
		seen[p.ID], seen["name:"+p.Name] = true, true
		if p.CRN == "" {
			p.CRN = "crn:v1:bluemix:public:iam-identity::a/" + c.AccountID + "::profile:" + p.ID
		}
		for j := range p.Links {
			if p.Links[j].CRType == "" {
				p.Links[j].CRType = "IKS_SA"
			}
		}
		if err := validatePolicies(fmt.Sprintf("profiles[%d]", i), p.Policies); err != nil {
			return err
		}
	}
	for i, k := range c.APIKeys {
		if k.ID == "" || (k.Key == "") == (k.KeyFile == "") {
			return fmt.Errorf("apiKeys[%d]: id and exactly one of key and keyFile are required", i)
		}
		if err := validatePolicies(fmt.Sprintf("apiKeys[%d]", i), k.Policies); err != nil {
			return err
		}
	}
	for i, k := range c.HMACKeys {
		if k.AccessKeyID == "" || (k.SecretAccessKey == "") == (k.SecretAccessKeyFile == "") {
			return fmt.Errorf("hmacKeys[%d]: accessKeyID and exactly one of secretAccessKey and secretAccessKeyFile are required", i)
		}
		if err := validatePolicies(fmt.Sprintf("hmacKeys[%d]", i), k.Policies); err != nil {
			return err
		}
	}
	for i, s := range c.ServiceInstances {
		if s.ID == "" {
			return fmt.Errorf("serviceInstances[%d]: id is required", i)
		}
	}
	return nil
}

func validatePolicies(where string, ps []Policy) error {
	for j, p := range ps {
		if _, ok := roleActions[p.Role]; !ok {
			return fmt.Errorf("%s.policies[%d]: unknown role %q (want Reader, ObjectReader, ObjectWriter, Writer or Manager)", where, j, p.Role)
		}
		if r := p.Rule; r != nil {
			if p.Bucket == "" {
				return fmt.Errorf("%s.policies[%d]: a rule needs a bucket (IBM allows conditions only on a bucket resource)", where, j)
			}
			if r.Path == "" && r.Prefix == "" && !r.BucketActions {
				return fmt.Errorf("%s.policies[%d]: a rule needs a path, a prefix or bucketActions", where, j)
			}
			if len(r.Delimiters) > 0 && r.Prefix == "" {
				return fmt.Errorf("%s.policies[%d]: delimiters only apply with a prefix", where, j)
			}
		}
	}
	return nil
}
