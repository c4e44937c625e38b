package mounter

// MetricNames lists the metric families the mounter itself serves next to
// the volumes' own (pkg/volume ServerMetrics, which it re-exports): what
// dashboards and alerts may name.
func MetricNames() []string {
	return []string{
		"cosmount_mounter_server_deaths_total",
		"cosmount_mounter_unpublish_waits_total",
		"cosmount_mounter_volumes",
		volumeUpMetric,
	}
}
