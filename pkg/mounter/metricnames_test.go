package mounter

import (
	"regexp"
	"slices"
	"sort"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricNames: the list is what the collectors describe, plus the
// re-exporter's up series.
func TestMetricNames(t *testing.T) {
	m := &Mounter{}
	m.metrics = newMetrics()
	ch := make(chan *prometheus.Desc, 16)
	for _, c := range m.Collectors() {
		c.Describe(ch)
	}
	close(ch)
	var described []string
	for d := range ch {
		described = append(described, fqName(d))
	}
	described = append(described, volumeUpMetric)
	sort.Strings(described)
	got := MetricNames()
	sort.Strings(got)
	if !slices.Equal(got, described) {
		t.Errorf("MetricNames %v, the collectors describe %v", got, described)
	}
}

// fqName reads a Desc's name from its String form, the only place the
// client library shows it.
func fqName(d *prometheus.Desc) string {
	m := regexp.MustCompile(`fqName: "([^"]+)"`).FindStringSubmatch(d.String())
	if m == nil {
		return d.String()
	}
	return m[1]
}
