package mounter

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the mounter's own series. Per-volume series of the servers are
// re-exported by VolumeGatherer.
type metrics struct {
	deaths         *prometheus.CounterVec
	unpublishWaits prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		deaths: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cosmount_mounter_server_deaths_total",
			Help: "cosmount servers that ended without an unpublish, by reason (ServerKilled, ServerOOMKilled, ServerExited, ServerGone, MounterStopped).",
		}, []string{"reason"}),
		unpublishWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cosmount_mounter_unpublish_waits_total",
			Help: "Unpublish calls answered Unavailable because the server still had data to upload.",
		}),
	}
}

// Collectors returns the mounter's metrics for a registry: its counters and
// a gauge of the volumes it serves by state (from its records, without
// probing the mounts).
func (m *Mounter) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.metrics.deaths, m.metrics.unpublishWaits, volumesCollector{m}}
}

// Gatherer returns a gatherer of every live server's own metrics with
// volume_id and target_hash labels.
func (m *Mounter) Gatherer() prometheus.Gatherer {
	return NewVolumeGatherer(m.records, DefaultVolumeScrapeTimeout)
}

var volumesDesc = prometheus.NewDesc("cosmount_mounter_volumes",
	"Volumes the mounter serves, by state: running (a server is serving) or dead (the server is gone; the volume waits to be unpublished).",
	[]string{"state"}, nil)

type volumesCollector struct{ m *Mounter }

func (c volumesCollector) Describe(ch chan<- *prometheus.Desc) { ch <- volumesDesc }

func (c volumesCollector) Collect(ch chan<- prometheus.Metric) {
	recs, _ := c.m.records()
	running, dead := 0, 0
	for _, r := range recs {
		if r.Died == nil && procAlive(r.PID, r.ProcStart) {
			running++
		} else {
			dead++
		}
	}
	ch <- prometheus.MustNewConstMetric(volumesDesc, prometheus.GaugeValue, float64(running), "running")
	ch <- prometheus.MustNewConstMetric(volumesDesc, prometheus.GaugeValue, float64(dead), "dead")
}
