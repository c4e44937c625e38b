// Command sidecars is the cluster suite's stand-in for the two upstream CSI
// sidecars the deploy manifests name but the Go module proxy does not serve:
// node-driver-registrar and livenessprobe. Like busybox it picks its role from
// the name it is called by (the image links /csi-node-driver-registrar and
// /livenessprobe to it), and it accepts the flags the manifests pass, so the
// manifests run unchanged. It implements only what the suite relies on:
// registering the CSI socket with kubelet through the plugin-registration
// API, that registration's probe mode, and a /healthz that calls CSI Probe.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

func main() {
	role := filepath.Base(os.Args[0])
	args := os.Args[1:]
	// "sidecars ROLE flags..." also works, for running it by hand.
	if role == "sidecars" && len(args) > 0 {
		role, args = args[0], args[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch role {
	case "csi-node-driver-registrar":
		err = registrar(ctx, args)
	case "livenessprobe":
		err = livenessProbe(ctx, args)
	default:
		err = fmt.Errorf("unknown role %q (want csi-node-driver-registrar or livenessprobe)", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", role, err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().UTC().Format(time.RFC3339), fmt.Sprintf(format, args...))
}

// dialCSI connects to the plugin's socket; the plugin may start after us.
func dialCSI(ctx context.Context, address string) (*grpc.ClientConn, error) {
	path := strings.TrimPrefix(address, "unix://")
	for {
		if _, err := os.Stat(path); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("CSI socket %s did not appear: %w", path, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
	return grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

func driverName(ctx context.Context, conn *grpc.ClientConn) (string, error) {
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		info, err := csi.NewIdentityClient(conn).GetPluginInfo(cctx, &csi.GetPluginInfoRequest{})
		cancel()
		if err == nil {
			return info.GetName(), nil
		}
		logf("GetPluginInfo: %v (retrying)", err)
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// registrationServer answers kubelet's plugin watcher.
type registrationServer struct {
	registerapi.UnimplementedRegistrationServer
	name, endpoint string
	failed         chan error
}

func (s *registrationServer) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	logf("kubelet asked for plugin info: %s at %s", s.name, s.endpoint)
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              s.name,
		Endpoint:          s.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (s *registrationServer) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if st.PluginRegistered {
		logf("kubelet registered %s", s.name)
	} else {
		// Exiting lets the container restart and registration start over,
		// as the upstream registrar does.
		logf("kubelet refused %s: %s", s.name, st.Error)
		select {
		case s.failed <- fmt.Errorf("registration refused: %s", st.Error):
		default:
		}
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

func registrar(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("csi-node-driver-registrar", flag.ContinueOnError)
	csiAddress := fs.String("csi-address", "/csi/csi.sock", "CSI socket of the plugin inside this container")
	kubeletPath := fs.String("kubelet-registration-path", "", "CSI socket path on the host, as kubelet sees it")
	regDir := fs.String("plugin-registration-path", "/registration", "kubelet's plugins_registry directory")
	mode := fs.String("mode", "registration", "registration or kubelet-registration-probe (deprecated upstream)")
	httpEndpoint := fs.String("http-endpoint", "", "address of /healthz, which answers whether the registration socket exists (e.g. :9809)")
	healthPort := fs.Int("health-port", 0, "deprecated upstream form of --http-endpoint=:PORT")
	fs.Duration("timeout", time.Second, "timeout of calls to the driver (accepted for compatibility)")
	fs.Int("v", 0, "log verbosity (accepted for compatibility)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *kubeletPath == "" {
		return fmt.Errorf("--kubelet-registration-path is required")
	}
	addr, err := healthAddress(*httpEndpoint, *healthPort)
	if err != nil {
		return err
	}
	conn, err := dialCSI(ctx, *csiAddress)
	if err != nil {
		return err
	}
	defer conn.Close()
	name, err := driverName(ctx, conn)
	if err != nil {
		return err
	}
	socket := filepath.Join(*regDir, name+"-reg.sock")
	if addr != "" && *mode != "kubelet-registration-probe" {
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
			if _, err := os.Stat(socket); err != nil {
				http.Error(w, "registration socket: "+err.Error(), http.StatusInternalServerError)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		stop, err := serveHealth(ctx, addr, mux)
		if err != nil {
			return err
		}
		defer stop()
	}

	if *mode == "kubelet-registration-probe" {
		rc, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer rc.Close()
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		info, err := registerapi.NewRegistrationClient(rc).GetInfo(pctx, &registerapi.InfoRequest{})
		if err != nil {
			return fmt.Errorf("registration socket %s: %w", socket, err)
		}
		logf("registration socket serves %s", info.Name)
		return nil
	}

	if err := os.Remove(socket); err != nil && !os.IsNotExist(err) {
		return err
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	rs := &registrationServer{name: name, endpoint: *kubeletPath, failed: make(chan error, 1)}
	registerapi.RegisterRegistrationServer(srv, rs)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	logf("serving registration of %s on %s", name, socket)
	defer os.Remove(socket)
	select {
	case <-ctx.Done():
		srv.Stop()
		return nil
	case err := <-rs.failed:
		srv.Stop()
		return err
	case err := <-served:
		return err
	}
}

func livenessProbe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("livenessprobe", flag.ContinueOnError)
	csiAddress := fs.String("csi-address", "/csi/csi.sock", "CSI socket of the plugin")
	port := fs.Int("health-port", 0, "deprecated upstream form of --http-endpoint=:PORT (default 9808)")
	httpEndpoint := fs.String("http-endpoint", "", "address of /healthz (e.g. :9808)")
	fs.String("metrics-path", "/metrics", "accepted for compatibility; the stand-in serves no metrics")
	timeout := fs.Duration("probe-timeout", 10*time.Second, "timeout of one CSI Probe")
	fs.Int("v", 0, "log verbosity (accepted for compatibility)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *port == 0 && *httpEndpoint == "" {
		*port = 9808
	}
	addr, err := healthAddress(*httpEndpoint, *port)
	if err != nil {
		return err
	}
	conn, err := dialCSI(ctx, *csiAddress)
	if err != nil {
		return err
	}
	defer conn.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		pctx, cancel := context.WithTimeout(r.Context(), *timeout)
		defer cancel()
		resp, err := csi.NewIdentityClient(conn).Probe(pctx, &csi.ProbeRequest{})
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		case resp.GetReady() != nil && !resp.GetReady().GetValue():
			http.Error(w, "driver is not ready", http.StatusInternalServerError)
		default:
			fmt.Fprintln(w, "ok")
		}
	})
	stop, err := serveHealth(ctx, addr, mux)
	if err != nil {
		return err
	}
	<-ctx.Done()
	stop()
	return nil
}

// healthAddress turns the upstream flags into the address to listen on:
// --http-endpoint (":9808", "host:9808") or --health-port, never both, as
// upstream refuses. The host is always loopback: the suite runs pods on the
// host network, and kubelet probes them at the node IP, 127.0.0.1.
func healthAddress(endpoint string, port int) (string, error) {
	switch {
	case endpoint != "" && port != 0:
		return "", fmt.Errorf("only one of --http-endpoint and --health-port may be set")
	case endpoint != "":
		_, p, err := net.SplitHostPort(endpoint)
		if err != nil {
			return "", fmt.Errorf("--http-endpoint %q: %w", endpoint, err)
		}
		return net.JoinHostPort("127.0.0.1", p), nil
	case port != 0:
		return fmt.Sprintf("127.0.0.1:%d", port), nil
	}
	return "", nil
}

// serveHealth serves mux on addr until the returned function is called.
func serveHealth(ctx context.Context, addr string, mux *http.ServeMux) (func(), error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	logf("serving /healthz on %s", addr)
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}, nil
}
