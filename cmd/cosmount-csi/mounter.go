package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/mounter"
	"github.com/cosmount/cosmount/pkg/mounterapi"
	"github.com/cosmount/cosmount/pkg/version"
	"github.com/cosmount/cosmount/pkg/volume"
)

// passedEnv are the variables of the mounter's own environment that its
// servers get: how to reach IAM and COS through a proxy and which CAs to
// trust. Nothing else is inherited, so no credential leaks in by accident.
var passedEnv = []string{
	"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy",
	"SSL_CERT_FILE", "SSL_CERT_DIR", "TZ",
}

// mounterFlags configure --mode=mounter.
type mounterFlags struct {
	stateDir       string
	binary         string
	mountTimeout   time.Duration
	stopTimeout    time.Duration
	memoryLimit    string
	tempDir        string
	cacheDir       string
	tempLimit      string
	metricsAddress string
	shutdownGrace  time.Duration
	supervise      string
}

func defaultMounterFlags() *mounterFlags {
	return &mounterFlags{
		stateDir:      "/run/cosmount/volumes",
		binary:        "/usr/local/bin/cosmount",
		mountTimeout:  60 * time.Second,
		stopTimeout:   60 * time.Second,
		memoryLimit:   "512MiB",
		tempLimit:     "1GiB",
		shutdownGrace: 50 * time.Second,
		supervise:     "auto",
	}
}

func (m *mounterFlags) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&m.stateDir, "state-dir", m.stateDir, "mounter: directory for per-volume records, credential files and control sockets (a hostPath, so that a restarted mounter finds them)")
	fs.StringVar(&m.binary, "cosmount-binary", m.binary, "mounter: path of the cosmount FUSE server")
	fs.DurationVar(&m.mountTimeout, "mount-timeout", m.mountTimeout, "mounter: how long a new server may take until its mount is live")
	fs.DurationVar(&m.stopTimeout, "stop-timeout", m.stopTimeout, "mounter: how long a server with nothing left to upload may take to exit after SIGTERM")
	fs.StringVar(&m.memoryLimit, "server-memory-limit", m.memoryLimit, "mounter: memory budget of each server (hard limit in a memory cgroup of its own where cgroups are writable); 0 for none")
	fs.StringVar(&m.tempDir, "temp-dir", m.tempDir, "mounter: directory for the servers' temporary files (read-modify-write); empty: the servers' default")
	fs.StringVar(&m.cacheDir, "cache-dir", m.cacheDir, "mounter: node-local directory for the volumes' read caches on disk (their cache_size); empty: volumes may only cache in memory")
	fs.StringVar(&m.tempLimit, "temp-limit", m.tempLimit, "mounter: the most temporary space (read-modify-write) one volume may use; a volume's temp_limit mount option may only lower it; 0 for no cap")
	fs.StringVar(&m.metricsAddress, "mounter-metrics-address", m.metricsAddress, "mounter: host:port to serve the mounter's and every volume's Prometheus metrics on; empty disables")
	fs.DurationVar(&m.shutdownGrace, "shutdown-grace", m.shutdownGrace, "mounter: on SIGTERM, how long servers may flush before the mounter exits (keep it below the pod's terminationGracePeriodSeconds)")
	fs.StringVar(&m.supervise, "supervise", m.supervise, "mounter: run the mounter as a child of a minimal supervisor that restarts it, so that a crash of the mounter does not end the servers (true, false, or auto: when PID 1)")
}

// runMounterMode starts the mounter, under a supervisor when asked.
func runMounterMode(f *mounterFlags, endpoint string) error {
	supervise := f.supervise == "true" || (f.supervise == "auto" && os.Getpid() == 1)
	if f.supervise != "true" && f.supervise != "false" && f.supervise != "auto" {
		return fmt.Errorf("--supervise %q must be true, false or auto", f.supervise)
	}
	if supervise && os.Getenv(supervisedEnv) == "" {
		return superviseMounter()
	}
	return serveMounter(f, endpoint)
}

// serveMounter runs the mounter until SIGTERM or SIGINT.
func serveMounter(f *mounterFlags, endpoint string) error {
	limit, err := volume.ParseSize(f.memoryLimit)
	if err != nil {
		return fmt.Errorf("--server-memory-limit: %w", err)
	}
	tempLimit, err := volume.ParseSize(f.tempLimit)
	if err != nil {
		return fmt.Errorf("--temp-limit: %w", err)
	}
	sock, err := mounterapi.SocketPath(endpoint)
	if err != nil {
		return fmt.Errorf("--mounter-endpoint: %w", err)
	}
	env := []string{"PATH=" + mounter.DefaultPath}
	for _, k := range passedEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	if f.tempDir != "" {
		if err := os.MkdirAll(f.tempDir, 0o700); err != nil {
			return fmt.Errorf("--temp-dir: %w", err)
		}
	}
	if f.cacheDir != "" {
		if err := os.MkdirAll(f.cacheDir, 0o700); err != nil {
			return fmt.Errorf("--cache-dir: %w", err)
		}
	}
	m, err := mounter.New(mounter.Options{
		StateDir: f.stateDir, Binary: f.binary, MountTimeout: f.mountTimeout, StopTimeout: f.stopTimeout,
		Env: env, ServerMemoryLimit: limit, NodeOptions: volume.Options{TempDir: f.tempDir, TempLimit: tempLimit, CacheDir: f.cacheDir}, Version: version.Version,
	})
	if err != nil {
		return err
	}
	defer m.Close()
	m.Recover()
	ln, err := mounterapi.Listen(sock)
	if err != nil {
		return fmt.Errorf("--mounter-endpoint: %w", err)
	}
	srv := grpc.NewServer()
	mounterapi.Register(srv, m)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errs := make(chan error, 2)
	go func() { errs <- srv.Serve(ln) }()
	if f.metricsAddress != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		reg.MustRegister(m.Collectors()...)
		go func() { errs <- serveMetrics(ctx, f.metricsAddress, prometheus.Gatherers{reg, m.Gatherer()}) }()
	}
	klog.InfoS("cosmount mounter serving", "version", version.Version, "endpoint", sock, "stateDir", f.stateDir,
		"serverMemoryLimit", volume.FormatSize(limit), "tempLimit", volume.FormatSize(tempLimit), "pid", os.Getpid(), "supervised", os.Getenv(supervisedEnv) != "")
	select {
	case <-ctx.Done():
	case err := <-errs:
		srv.Stop()
		return err
	}
	klog.InfoS("Stopping: every server flushes and unmounts; their volumes are reported dead until unpublished", "grace", f.shutdownGrace)
	srv.Stop()
	shutdown, cancel := context.WithTimeout(context.Background(), f.shutdownGrace)
	defer cancel()
	m.Shutdown(shutdown)
	return nil
}

func serveMetrics(ctx context.Context, addr string, g prometheus.Gatherer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--mounter-metrics-address: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	klog.InfoS("Serving mounter metrics", "address", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("--mounter-metrics-address: %w", err)
	}
	return nil
}
