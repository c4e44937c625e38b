package driver

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/mounterapi"
)

// Deps are the driver's collaborators, wired by cmd/cosmount-csi (or a
// test): the node service needs Mounter and Verifier, the controller
// Stores.
type Deps struct {
	// Mounter is the node's mounter (a mounterapi.Client in a cluster).
	Mounter  mounterapi.Service
	Verifier IdentityVerifier
	Stores   StoreFactory
	// Registry receives the RPC metrics; nil means a new registry.
	Registry *prometheus.Registry
}

// Driver is the plugin: the services selected by Options.Mode behind one
// gRPC server, and the metrics endpoint.
type Driver struct {
	opts     Options
	server   *Server
	registry *prometheus.Registry
}

// New validates opts and builds the services for its mode.
func New(opts Options, deps Deps) (*Driver, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	d := &Driver{opts: opts, registry: deps.Registry}
	if d.registry == nil {
		d.registry = prometheus.NewRegistry()
	}
	metrics, err := NewMetrics(d.registry)
	if err != nil {
		return nil, err
	}
	var cs *ControllerService
	if opts.runsController() {
		if deps.Stores == nil {
			return nil, errors.New("controller mode needs an object store factory")
		}
		if cs, err = NewControllerService(opts, deps.Stores); err != nil {
			return nil, err
		}
	}
	var ns *NodeService
	if opts.runsNode() {
		if deps.Mounter == nil || deps.Verifier == nil {
			return nil, errors.New("node mode needs a mounter and an identity verifier")
		}
		if ns, err = NewNodeService(opts, deps.Mounter, deps.Verifier); err != nil {
			return nil, err
		}
	}
	d.server = NewServer(NewIdentityService(cs != nil), cs, ns, metrics)
	return d, nil
}

// Registry returns the registry the metrics endpoint serves.
func (d *Driver) Registry() *prometheus.Registry { return d.registry }

// Run serves CSI (and metrics, if configured) until ctx ends. The plugin
// holds no mount state: stopping it leaves every mount with the mounter.
func (d *Driver) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	running := 1
	if d.opts.MetricsAddress != "" {
		running++
		go func() { errs <- ServeMetrics(ctx, d.opts.MetricsAddress, d.registry) }()
	}
	go func() { errs <- d.server.Serve(ctx, d.opts.Endpoint) }()
	var all []error
	for i := 0; i < running; i++ {
		if err := <-errs; err != nil {
			all = append(all, err)
		}
		cancel() // one server ending stops the other
	}
	if len(all) > 0 {
		klog.ErrorS(errors.Join(all...), "cosmount-csi servers stopped")
		return fmt.Errorf("serving: %w", errors.Join(all...))
	}
	return nil
}
