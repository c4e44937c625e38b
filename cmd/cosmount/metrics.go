package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/volume"
)

// mountMetrics are the per-volume numbers of one server process (the
// families pkg/volume's ServerMetrics lists): S3 requests by operation,
// bytes, errors, latency and retries; bytes dirty and uploading; FUSE
// requests and their latency; IAM token refreshes and expiry. Each process
// has its own registry; the node's mounter reads it per volume.
type mountMetrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	errors    *prometheus.CounterVec
	refreshes *prometheus.CounterVec
	live      // the rest: metrics_live.go
}

var _ cos.Observer = (*mountMetrics)(nil)

func newMountMetrics() *mountMetrics {
	m := &mountMetrics{
		reg:       prometheus.NewRegistry(),
		requests:  counterVec(volume.MetricS3Requests),
		bytes:     counterVec(volume.MetricS3Bytes),
		errors:    counterVec(volume.MetricS3Errors),
		refreshes: counterVec(volume.MetricTokenRefreshes),
	}
	m.reg.MustRegister(m.requests, m.bytes, m.errors, m.refreshes)
	m.live.register(m.reg)
	return m
}

// ObserveRequest implements cos.Observer.
func (m *mountMetrics) ObserveRequest(op string, bytes int64, err error) {
	m.requests.WithLabelValues(op).Inc()
	if bytes > 0 {
		m.bytes.WithLabelValues(op).Add(float64(bytes))
	}
	errs := m.errors.WithLabelValues(op) // 0 until it fails, so that error ratios exist
	// "Not found" is an answer, not a failure: every lookup of a name that
	// does not exist (a new file, a probe by a shell) gets one.
	if err != nil && !errors.Is(err, cos.ErrNotFound) {
		errs.Inc()
	}
}

func (m *mountMetrics) tokenRefreshed(err error) {
	result := "success"
	if err != nil {
		result = "error"
	}
	m.refreshes.WithLabelValues(result).Inc()
}

// serve exposes /metrics on the TCP address addr until the returned stop
// function is called.
func (m *mountMetrics) serve(addr string) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-address: %w", err)
	}
	return m.serveOn(ln), nil
}

func (m *mountMetrics) serveOn(ln net.Listener) func() {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "metrics server stopped", "address", ln.Addr().String())
		}
	}()
	return func() { _ = srv.Close() }
}
