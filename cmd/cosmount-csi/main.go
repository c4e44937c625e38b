// Command cosmount-csi is cosmount's node-side and cluster-side software:
// the CSI plugin (controller, node or both) and, with --mode=mounter, the
// node's mounter that owns every FUSE server (see docs/architecture.md). It
// only parses flags and wires the packages together.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/driver"
	"github.com/cosmount/cosmount/pkg/mounterapi"
	"github.com/cosmount/cosmount/pkg/version"
)

// modeMounter runs the node's mounter instead of a CSI service.
const modeMounter = "mounter"

func main() {
	opts := driver.DefaultOptions()
	mopts := defaultMounterFlags()
	fs := flag.NewFlagSet("cosmount-csi", flag.ExitOnError)
	klog.InitFlags(fs)
	opts.AddFlags(fs)
	mopts.addFlags(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: cosmount-csi --mode=controller|node|all|mounter [flags]\n\n"+
			"controller, node, all: the CSI plugin. mounter: the node's mounter, which runs every\n"+
			"volume's cosmount server and answers the node plugin on --mounter-endpoint.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Println(version.Version)
		return
	}
	if opts.Mode == modeMounter {
		if err := runMounterMode(mopts, opts.MounterEndpoint); err != nil {
			klog.ErrorS(err, "cosmount mounter stopped")
			klog.Flush()
			os.Exit(1)
		}
		klog.Flush()
		return
	}
	if err := runPlugin(opts); err != nil {
		fmt.Fprintln(os.Stderr, "cosmount-csi:", err)
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

// runPlugin wires the CSI plugin's real collaborators and serves until
// SIGTERM or SIGINT.
func runPlugin(opts driver.Options) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	deps := driver.Deps{Registry: reg, Verifier: driver.NewIAMVerifier(), Stores: driver.NewCOSStores(opts)}
	var client *mounterapi.Client
	if opts.Mode == driver.ModeNode || opts.Mode == driver.ModeAll {
		var err error
		client, err = mounterapi.Dial(opts.MounterEndpoint)
		if err != nil {
			return fmt.Errorf("--mounter-endpoint: %w", err)
		}
		defer client.Close()
		deps.Mounter = client
	}
	d, err := driver.New(opts, deps)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	klog.InfoS("Starting cosmount CSI plugin", "version", version.Version, "mode", opts.Mode, "node", opts.NodeID)
	if client != nil {
		// Say early whether the mounter is there; publishes fail with
		// Unavailable (and kubelet retries) until it is.
		go func() {
			v, err := client.WaitReady(ctx)
			if err != nil {
				klog.ErrorS(err, "The node's mounter does not answer", "endpoint", opts.MounterEndpoint)
				return
			}
			klog.InfoS("Connected to the node's mounter", "endpoint", opts.MounterEndpoint, "api", v.API, "mounterVersion", v.Version)
		}()
	}
	return d.Run(ctx)
}
