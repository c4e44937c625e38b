// Command demo tells cosmount's story on one machine, step by step, for a
// human to read: a pod's projected service-account token is exchanged at
// (emulated) IBM Cloud IAM through a trusted profile, the node plugin mounts
// the bucket like kubelet asks it to, the pod's `echo "hello world"` becomes a
// bearer-authenticated PUT, and everything is cleaned up afterwards.
//
// It needs root and fusermount3 (Debian package fuse3). `make demo` builds the
// binaries and runs it; `go run ./test/demo` builds them itself.
//
// The package owns only the demo: it talks to the product through its
// binaries, its CSI socket and the public COS client, never through test code.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	binDir := flag.String("bin", "", "directory with cosmount, cosmount-csi and cosmount-emulator (default: build them into the demo's temporary directory)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "demo: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		// From now on a second Ctrl-C kills the demo at once, skipping the cleanup.
		stop()
	}()
	if err := run(ctx, os.Stdout, *binDir); err != nil {
		fmt.Fprintf(os.Stdout, "\nDEMO FAILED: %v\n", err)
		os.Exit(1)
	}
}
