// Package driver owns cosmount's CSI plugin: the Identity, Controller and
// Node services, the parsing of volume attributes into typed requests (with
// pkg/volume's rules), the pod-token plumbing of NodePublishVolume, and the
// mapping of Go errors to gRPC codes at the RPC boundary. Mount processes
// are the node's mounter's business, reached through a mounterapi.Service;
// objects are pkg/cos's. Concrete collaborators are wired by
// cmd/cosmount-csi. This package never imports FUSE code.
package driver

import (
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/cosmount/cosmount/pkg/iam"
	"github.com/cosmount/cosmount/pkg/mounterapi"
	"github.com/cosmount/cosmount/pkg/volume"
)

// Name is the CSI driver name registered with Kubernetes.
const Name = "cosmount.csi.io"

// DefaultMounterEndpoint is where the node's mounter listens: a hostPath
// that the node plugin and the mounter DaemonSets share.
const DefaultMounterEndpoint = "unix:///run/cosmount/mounter/mounter.sock"

// Modes the plugin can run in.
const (
	ModeController = "controller"
	ModeNode       = "node"
	ModeAll        = "all"
)

// Options is the plugin's configuration, filled from flags by AddFlags.
type Options struct {
	// Endpoint is the CSI socket: unix:///path, unix:/path or a plain path.
	Endpoint string
	// NodeID is this node's name; required in node mode.
	NodeID string
	// Mode is controller, node or all.
	Mode string
	// IAMEndpoint is the default IAM base URL; a volume may pick another
	// one of AllowedIAMEndpoints.
	IAMEndpoint string
	// COSEndpoint is the default COS endpoint of volumes that name none
	// (inline volumes always use it); empty means volumes must name one.
	COSEndpoint string
	// AllowedIAMEndpoints and AllowedCOSEndpoints are what a volume's
	// iamEndpoint and cosEndpoint may name besides the defaults: URLs or
	// host patterns ('*' is one DNS label). See endpoints.go.
	AllowedIAMEndpoints []string
	AllowedCOSEndpoints []string
	// AllowInsecureHTTP permits plain http endpoints (a local emulator).
	AllowInsecureHTTP bool
	// Inline is the admin's policy for ephemeral inline volumes.
	Inline InlinePolicy
	// TokenAudience selects the pod token kubelet passes (CSIDriver tokenRequests).
	TokenAudience string
	// MounterEndpoint is the unix socket of the node's mounter, which owns
	// the FUSE servers (node mode).
	MounterEndpoint string
	// MetricsAddress, if set, serves Prometheus metrics on host:port.
	MetricsAddress string
	// ControllerTokenFile is the controller's own projected service-account
	// token, exchanged through ControllerProfile for bucket administration
	// when the provisioner secret carries no API key.
	ControllerTokenFile string
	// ControllerProfile names the controller's trusted profile: a CRN
	// ("crn:..."), an ID ("Profile-...") or else a name.
	ControllerProfile string
}

// DefaultOptions returns the defaults the flags start from.
func DefaultOptions() Options {
	return Options{
		Endpoint:            "unix:///csi/csi.sock",
		Mode:                ModeAll,
		IAMEndpoint:         iam.DefaultBaseURL,
		AllowedIAMEndpoints: DefaultAllowedIAMEndpoints,
		AllowedCOSEndpoints: DefaultAllowedCOSEndpoints,
		Inline:              DefaultInlinePolicy(),
		TokenAudience:       "iam",
		MounterEndpoint:     DefaultMounterEndpoint,
		ControllerTokenFile: "/var/run/secrets/tokens/iam-token",
	}
}

// AddFlags registers the options on fs with the current values as defaults.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Endpoint, "endpoint", o.Endpoint, "CSI endpoint (unix socket)")
	fs.StringVar(&o.NodeID, "node-id", o.NodeID, "node ID (the Kubernetes node name); required in node mode")
	fs.StringVar(&o.Mode, "mode", o.Mode, "services to run: controller, node or all")
	fs.StringVar(&o.IAMEndpoint, "iam-endpoint", o.IAMEndpoint, "default IBM Cloud IAM base URL; a volume's iamEndpoint may only pick one of --allowed-iam-endpoints")
	fs.StringVar(&o.COSEndpoint, "cos-endpoint", o.COSEndpoint, "default COS endpoint of volumes without cosEndpoint (and of every inline volume); empty: volumes must name one")
	fs.Var((*listFlag)(&o.AllowedIAMEndpoints), "allowed-iam-endpoints", "comma-separated IAM endpoints a volume may pick besides --iam-endpoint: URLs or hosts, '*' standing for one DNS label")
	fs.Var((*listFlag)(&o.AllowedCOSEndpoints), "allowed-cos-endpoints", "comma-separated COS endpoints a volume may pick besides --cos-endpoint: URLs or hosts, '*' standing for one DNS label")
	fs.BoolVar(&o.AllowInsecureHTTP, "allow-insecure-http", o.AllowInsecureHTTP, "allow plain http IAM and COS endpoints (a local emulator); never in production: tokens would travel in clear text")
	fs.BoolVar(&o.Inline.Enabled, "inline-volumes", o.Inline.Enabled, "node: allow ephemeral inline CSI volumes (pod authors write their attributes); off by default")
	fs.Var((*listFlag)(&o.Inline.AllowedAttributes), "inline-volume-attributes",
		"node: comma-separated attributes a pod author may set on an inline volume (of "+strings.Join(inlineSettable, ", ")+"); endpoints and authType always come from the admin")
	fs.StringVar(&o.TokenAudience, "token-audience", o.TokenAudience, "audience of the pod service-account token to exchange (CSIDriver tokenRequests)")
	fs.StringVar(&o.MounterEndpoint, "mounter-endpoint", o.MounterEndpoint, "node: unix socket of the node's mounter, which runs the FUSE servers")
	fs.StringVar(&o.MetricsAddress, "metrics-address", o.MetricsAddress, "host:port to serve Prometheus metrics on; empty disables")
	fs.StringVar(&o.ControllerTokenFile, "controller-token-file", o.ControllerTokenFile, "controller: projected service-account token exchanged through --controller-trusted-profile")
	fs.StringVar(&o.ControllerProfile, "controller-trusted-profile", o.ControllerProfile, "controller: trusted profile (ID, name or CRN) for bucket administration; a provisioner secret apiKey takes precedence")
}

// Validate checks the options and normalizes the endpoint.
func (o *Options) Validate() error {
	var errs []error
	if _, err := mounterapi.SocketPath(o.Endpoint); err != nil {
		errs = append(errs, fmt.Errorf("--endpoint: %w", err))
	}
	switch o.Mode {
	case ModeController, ModeNode, ModeAll:
	default:
		errs = append(errs, fmt.Errorf("--mode %q must be controller, node or all", o.Mode))
	}
	if o.runsNode() {
		if o.NodeID == "" {
			errs = append(errs, errors.New("--node-id is required in node mode"))
		}
		if _, err := mounterapi.SocketPath(o.MounterEndpoint); err != nil {
			errs = append(errs, fmt.Errorf("--mounter-endpoint: %w", err))
		}
	}
	if err := volume.CheckURL(o.IAMEndpoint); err != nil {
		errs = append(errs, fmt.Errorf("--iam-endpoint: %w", err))
	} else if _, _, err := o.endpointPolicies(); err != nil {
		errs = append(errs, err)
	}
	if err := o.Inline.validate(); err != nil {
		errs = append(errs, err)
	}
	if strings.TrimSpace(o.TokenAudience) == "" {
		errs = append(errs, errors.New("--token-audience must not be empty"))
	}
	return errors.Join(errs...)
}

func (o *Options) runsNode() bool       { return o.Mode == ModeNode || o.Mode == ModeAll }
func (o *Options) runsController() bool { return o.Mode == ModeController || o.Mode == ModeAll }

// endpointPolicies builds the IAM and COS endpoint policies from the flags.
func (o *Options) endpointPolicies() (iamPolicy, cosPolicy *EndpointPolicy, err error) {
	iamPolicy, err = NewEndpointPolicy(attrIAMEndpoint, true, o.IAMEndpoint, o.AllowedIAMEndpoints, o.AllowInsecureHTTP)
	if err != nil {
		return nil, nil, fmt.Errorf("--iam-endpoint/--allowed-iam-endpoints: %w", err)
	}
	cosPolicy, err = NewEndpointPolicy(attrEndpoint, false, o.COSEndpoint, o.AllowedCOSEndpoints, o.AllowInsecureHTTP)
	if err != nil {
		return nil, nil, fmt.Errorf("--cos-endpoint/--allowed-cos-endpoints: %w", err)
	}
	return iamPolicy, cosPolicy, nil
}

// listFlag is a comma-separated list flag; setting it replaces the default.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = nil
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l = append(*l, item)
		}
	}
	return nil
}

// controllerProfile parses ControllerProfile into an iam.Profile.
func (o *Options) controllerProfile() iam.Profile {
	p := o.ControllerProfile
	switch {
	case strings.HasPrefix(p, "crn:"):
		return iam.Profile{CRN: p}
	case strings.HasPrefix(p, "Profile-"):
		return iam.Profile{ID: p}
	default:
		return iam.Profile{Name: p}
	}
}
