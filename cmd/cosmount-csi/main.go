// Command cosmount-csi is cosmount's CSI plugin (controller, node or both).
// It only parses flags and wires pkg/driver.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/driver"
	"github.com/cosmount/cosmount/pkg/version"
)

func main() {
	opts := driver.DefaultOptions()
	fs := flag.NewFlagSet("cosmount-csi", flag.ExitOnError)
	klog.InitFlags(fs)
	opts.AddFlags(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Println(version.Version)
		return
	}
	d, err := driver.New(opts, driver.Deps{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "cosmount-csi:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	klog.InfoS("Starting cosmount CSI plugin", "version", version.Version, "mode", opts.Mode, "node", opts.NodeID)
	if err := d.Run(ctx); err != nil {
		klog.ErrorS(err, "cosmount-csi stopped")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}
