package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/volume"
)

// controlled is what the control socket needs of a mounted filesystem
// (*fs.FS).
type controlled interface {
	Pending() volume.Pending
	MemoryStats() (inUse, highWater int64)
	Flush(ctx context.Context) error
}

// controlServer serves a mount's control socket: /metrics (Prometheus),
// GET /v1/status and POST /v1/flush.
type controlServer struct {
	metrics *mountMetrics
	fs      controlled
	// life bounds background flushes: they end when the server stops.
	life context.Context

	mu       sync.Mutex
	flushing bool // guarded by mu
}

func (c *controlServer) status() volume.ServerStatus {
	inUse, high := c.fs.MemoryStats()
	c.mu.Lock()
	flushing := c.flushing
	c.mu.Unlock()
	return volume.ServerStatus{PID: os.Getpid(), Pending: c.fs.Pending(), Flushing: flushing, MemoryInUse: inUse, MemoryHighWater: high}
}

// startFlush uploads every dirty file in the background, once at a time.
// A pod that is being deleted has closed its files, so this mostly retries
// uploads that failed and finishes release-time uploads early.
func (c *controlServer) startFlush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.flushing {
		return
	}
	c.flushing = true
	go func() {
		ctx, cancel := context.WithTimeout(c.life, flushTimeout)
		defer cancel()
		if err := c.fs.Flush(ctx); err != nil {
			klog.ErrorS(err, "Flush asked for by the mounter failed; it is retried at the next request")
		}
		c.mu.Lock()
		c.flushing = false
		c.mu.Unlock()
	}()
}

func (c *controlServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+volume.ControlMetricsPath, promhttp.HandlerFor(c.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET "+volume.ControlStatusPath, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, c.status())
	})
	mux.HandleFunc("POST "+volume.ControlFlushPath, func(w http.ResponseWriter, r *http.Request) {
		c.startFlush()
		writeJSON(w, http.StatusAccepted, c.status())
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// serveControl listens on the unix socket path (0600: only root, i.e. the
// mounter, talks to it) until the returned stop function is called, which
// also removes the socket.
func serveControl(path string, h http.Handler) (func(), error) {
	// A socket left by a crashed process would make Listen fail.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("--control-socket: remove stale socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("--control-socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("--control-socket: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "control socket server stopped", "path", path)
		}
	}()
	return func() {
		_ = srv.Close()
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			klog.ErrorS(err, "Removing the control socket", "path", path)
		}
	}, nil
}
