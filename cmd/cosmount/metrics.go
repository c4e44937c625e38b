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
)

// mountMetrics are the per-volume numbers of one server process: S3 requests
// by operation, bytes, errors, and IAM token refreshes. Each process has its
// own registry; the node plugin (or a scraper) reads them per volume.
type mountMetrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	errors    *prometheus.CounterVec
	refreshes *prometheus.CounterVec
}

var _ cos.Observer = (*mountMetrics)(nil)

func newMountMetrics() *mountMetrics {
	m := &mountMetrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cosmount_s3_requests_total", Help: "COS operations by operation name (after retries).",
		}, []string{"operation"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cosmount_s3_bytes_total", Help: "Payload bytes moved by COS operations.",
		}, []string{"operation"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cosmount_s3_errors_total", Help: "COS operations that failed, by operation.",
		}, []string{"operation"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cosmount_iam_token_refreshes_total", Help: "IAM token exchanges by result.",
		}, []string{"result"}),
	}
	m.reg.MustRegister(m.requests, m.bytes, m.errors, m.refreshes)
	return m
}

// ObserveRequest implements cos.Observer.
func (m *mountMetrics) ObserveRequest(op string, bytes int64, err error) {
	m.requests.WithLabelValues(op).Inc()
	if bytes > 0 {
		m.bytes.WithLabelValues(op).Add(float64(bytes))
	}
	if err != nil {
		m.errors.WithLabelValues(op).Inc()
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
