package main

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/fs"
	"github.com/cosmount/cosmount/pkg/volume"
)

// Histogram buckets, in seconds. A COS request takes from a few
// milliseconds (HEAD, small GET) to tens of seconds (an 8 MiB part on a
// slow link); a FUSE answer from microseconds (cached getattr) to the same
// (a flush that uploads).
var (
	s3DurationBuckets   = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	fuseDurationBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
)

// live are the metrics of what a server is doing right now and how fast:
// per-attempt S3 latency and retries, bytes uploading and dirty, FUSE
// requests, the IAM token's remaining lifetime.
type live struct {
	s3Duration   *prometheus.HistogramVec
	retries      *prometheus.CounterVec
	fuseDuration *prometheus.HistogramVec
	fuseErrors   *prometheus.CounterVec

	uploading   atomic.Int64
	fs          atomic.Pointer[fs.FS]
	tokenExpiry atomic.Pointer[func() time.Time] // nil without IAM tokens
	now         func() time.Time
}

var (
	_ cos.AttemptObserver = (*mountMetrics)(nil)
	_ fs.OpObserver       = (*mountMetrics)(nil)
)

func (l *live) register(reg *prometheus.Registry) {
	l.now = time.Now
	l.s3Duration = histogramVec(volume.MetricS3RequestDuration, s3DurationBuckets)
	l.retries = counterVec(volume.MetricS3Retries)
	l.fuseDuration = histogramVec(volume.MetricFUSEDuration, fuseDurationBuckets)
	l.fuseErrors = counterVec(volume.MetricFUSEErrors)
	reg.MustRegister(l.s3Duration, l.retries, l.fuseDuration, l.fuseErrors,
		gaugeFunc(volume.MetricUploadingBytes, func() float64 { return float64(l.uploading.Load()) }),
		gaugeFunc(volume.MetricDirtyBytes, func() float64 { p := l.pending(); return float64(p.Bytes + p.FailedBytes) }),
		gaugeFunc(volume.MetricDirtyFiles, func() float64 { p := l.pending(); return float64(p.Files + p.FailedFiles) }),
		tokenExpiryCollector{l},
	)
}

// AttemptStarted implements cos.AttemptObserver.
func (l *live) AttemptStarted(op string, retry bool, body int64) {
	// Every operation tried has a retries series, 0 until it retries, so
	// that rates and ratios of it exist.
	retries := l.retries.WithLabelValues(op)
	if retry {
		retries.Inc()
	}
	l.uploading.Add(body)
}

// AttemptDone implements cos.AttemptObserver.
func (l *live) AttemptDone(op string, body int64, d time.Duration, err error) {
	l.uploading.Add(-body)
	l.s3Duration.WithLabelValues(op).Observe(d.Seconds())
}

// ObserveOp implements fs.OpObserver.
func (l *live) ObserveOp(op string, d time.Duration, errno string) {
	l.fuseDuration.WithLabelValues(op).Observe(d.Seconds())
	if errno != "" {
		l.fuseErrors.WithLabelValues(op, errno).Inc()
	}
}

// serving gives the metrics the mounted filesystem to read dirty bytes from.
func (l *live) serving(f *fs.FS) { l.fs.Store(f) }

func (l *live) pending() volume.Pending {
	if f := l.fs.Load(); f != nil {
		return f.Pending()
	}
	return volume.Pending{}
}

// watchTokens tells the metrics where the token's expiry is read from:
// the cache's current token, at scrape time.
func (l *live) watchTokens(expiry func() time.Time) { l.tokenExpiry.Store(&expiry) }

// tokenExpiryCollector serves the seconds until the token expires,
// computed at scrape time; there is no series until a token was exchanged
// (and none for HMAC, which has no token).
type tokenExpiryCollector struct{ l *live }

var tokenExpiryDesc = desc(volume.MetricTokenExpiresIn)

func (c tokenExpiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- tokenExpiryDesc }

func (c tokenExpiryCollector) Collect(ch chan<- prometheus.Metric) {
	expiry := c.l.tokenExpiry.Load()
	if expiry == nil {
		return
	}
	exp := (*expiry)()
	if exp.IsZero() {
		return
	}
	left := exp.Sub(c.l.now()).Seconds()
	ch <- prometheus.MustNewConstMetric(tokenExpiryDesc, prometheus.GaugeValue, left)
}

// The collectors are built from pkg/volume's table, so that their names,
// types, labels and help are the ones the mounter and the dashboard know.

func metricSpec(name string, want volume.MetricType) volume.ServerMetric {
	m, ok := volume.LookupServerMetric(name)
	if !ok || m.Type != want {
		panic(fmt.Sprintf("metric %s is not a %s in pkg/volume's ServerMetrics", name, want))
	}
	return m
}

func counterVec(name string) *prometheus.CounterVec {
	m := metricSpec(name, volume.Counter)
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: m.Name, Help: m.Help}, m.Labels)
}

func histogramVec(name string, buckets []float64) *prometheus.HistogramVec {
	m := metricSpec(name, volume.Histogram)
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: m.Name, Help: m.Help, Buckets: buckets}, m.Labels)
}

func gaugeFunc(name string, f func() float64) prometheus.GaugeFunc {
	m := metricSpec(name, volume.Gauge)
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: m.Name, Help: m.Help}, f)
}

func desc(name string) *prometheus.Desc {
	m := metricSpec(name, volume.Gauge)
	return prometheus.NewDesc(m.Name, m.Help, m.Labels, nil)
}
