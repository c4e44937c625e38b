package driver

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/mounter"
)

// Deps are the driver's collaborators. Nil fields get the real
// implementations; tests pass fakes.
type Deps struct {
	Mounter  Mounter
	Verifier IdentityVerifier
	Stores   StoreFactory
	// Registry receives the RPC metrics (and, when created here, Go and
	// process collectors).
	Registry *prometheus.Registry
}

// Driver is the plugin: the services selected by Options.Mode behind one
// gRPC server, and the metrics endpoint.
type Driver struct {
	opts     Options
	server   *Server
	registry *prometheus.Registry
	// gatherer is what the metrics endpoint serves: registry plus, on a
	// node, the metrics of every volume's server.
	gatherer prometheus.Gatherer
	recover  func(context.Context) ([]mounter.Record, error)
}

// New validates opts and builds the services for its mode.
func New(opts Options, deps Deps) (*Driver, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	d := &Driver{opts: opts, registry: deps.Registry}
	if d.registry == nil {
		d.registry = prometheus.NewRegistry()
		d.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	metrics, err := NewMetrics(d.registry)
	if err != nil {
		return nil, err
	}
	var cs *ControllerService
	if opts.runsController() {
		stores := deps.Stores
		if stores == nil {
			stores = NewCOSStores(opts)
		}
		cs = NewControllerService(stores)
	}
	var ns *NodeService
	if opts.runsNode() {
		m := deps.Mounter
		if m == nil {
			real, err := mounter.New(mounter.Options{StateDir: opts.StateDir, Binary: opts.CosmountBinary, MountTimeout: opts.MountTimeout})
			if err != nil {
				return nil, err
			}
			m, d.recover = real, real.Recover
		}
		v := deps.Verifier
		if v == nil {
			v = NewIAMVerifier()
		}
		ns = NewNodeService(opts, m, v)
		d.gatherer = prometheus.Gatherers{d.registry, NewVolumeGatherer(m.Records, DefaultVolumeScrapeTimeout)}
	} else {
		d.gatherer = d.registry
	}
	d.server = NewServer(NewIdentityService(cs != nil), cs, ns, metrics)
	return d, nil
}

// Gatherer returns what the metrics endpoint serves: the plugin's registry
// and, in node mode, the per-volume metrics of the cosmount servers.
func (d *Driver) Gatherer() prometheus.Gatherer { return d.gatherer }

// Run adopts the servers of an earlier plugin instance, then serves CSI
// (and metrics, if configured) until ctx ends. Stopping the plugin leaves
// every mount and its server running: they are separate process groups.
func (d *Driver) Run(ctx context.Context) error {
	if d.recover != nil {
		adopted, err := d.recover(ctx)
		if err != nil {
			// A record that cannot be cleaned now is cleaned by its unpublish.
			klog.ErrorS(err, "Recovering volumes of the previous plugin instance")
		}
		klog.InfoS("Recovered volumes", "running", len(adopted))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	running := 1
	if d.opts.MetricsAddress != "" {
		running++
		go func() { errs <- ServeMetrics(ctx, d.opts.MetricsAddress, d.gatherer) }()
	}
	go func() { errs <- d.server.Serve(ctx, d.opts.Endpoint) }()
	var all []error
	for i := 0; i < running; i++ {
		if err := <-errs; err != nil {
			all = append(all, err)
		}
		cancel() // one server ending stops the other
	}
	return errors.Join(all...)
}
