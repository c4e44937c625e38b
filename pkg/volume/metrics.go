package volume

// The metrics a server serves on ControlMetricsPath. The mounter re-exports
// them with the labels volume_id and target_hash added (pkg/mounter), and
// the Grafana dashboard in deploy/ is built on them; this table is the one
// list both sides rely on, and the server builds its collectors from it.
// Names follow Prometheus' conventions: the cosmount_ prefix, base units
// (seconds, bytes) in the name, _total for counters.
const (
	MetricS3Requests        = "cosmount_s3_requests_total"
	MetricS3Errors          = "cosmount_s3_errors_total"
	MetricS3Bytes           = "cosmount_s3_bytes_total"
	MetricS3RequestDuration = "cosmount_s3_request_duration_seconds"
	MetricS3Retries         = "cosmount_s3_retries_total"
	MetricUploadingBytes    = "cosmount_uploading_bytes"
	MetricDirtyBytes        = "cosmount_dirty_bytes"
	MetricDirtyFiles        = "cosmount_dirty_files"
	MetricFUSEDuration      = "cosmount_fuse_operation_duration_seconds"
	MetricFUSEErrors        = "cosmount_fuse_operation_errors_total"
	MetricTokenRefreshes    = "cosmount_iam_token_refreshes_total"
	MetricTokenExpiresIn    = "cosmount_iam_token_expires_in_seconds"
)

// MetricType is a Prometheus metric type, as the text exposition names it.
type MetricType string

// The metric types the servers use.
const (
	Counter   MetricType = "counter"
	Gauge     MetricType = "gauge"
	Histogram MetricType = "histogram"
)

// ServerMetric describes one metric family of a server.
type ServerMetric struct {
	Name   string
	Type   MetricType
	Labels []string
	Help   string
	// AfterToken: only servers that authenticate with IAM tokens (trusted
	// profile, API key) have it; an HMAC server has no token.
	AfterToken bool
}

// ServerMetrics lists every metric family a server serves.
var ServerMetrics = []ServerMetric{
	{Name: MetricS3Requests, Type: Counter, Labels: []string{"operation"},
		Help: "COS operations by operation name, each counted once after its retries."},
	{Name: MetricS3Errors, Type: Counter, Labels: []string{"operation"},
		Help: "COS operations that failed after their retries, by operation; a not-found answer is not a failure."},
	{Name: MetricS3Bytes, Type: Counter, Labels: []string{"operation"},
		Help: "Payload bytes moved by COS operations: uploaded for writes, read by the caller for GetObject."},
	{Name: MetricS3RequestDuration, Type: Histogram, Labels: []string{"operation"},
		Help: "Seconds from sending one HTTP request to COS until its response headers (each attempt, retries included), by operation."},
	{Name: MetricS3Retries, Type: Counter, Labels: []string{"operation"},
		Help: "HTTP requests to COS that repeated an earlier attempt of the same operation (after a 5xx, a throttle, a reset connection or a refused token), by operation."},
	{Name: MetricUploadingBytes, Type: Gauge,
		Help: "Bytes of request bodies (PutObject, UploadPart) on their way to COS right now."},
	{Name: MetricDirtyBytes, Type: Gauge,
		Help: "Bytes of files with changes that are not in the bucket yet, including those whose upload failed."},
	{Name: MetricDirtyFiles, Type: Gauge,
		Help: "Files with changes that are not in the bucket yet, including those whose upload failed."},
	{Name: MetricFUSEDuration, Type: Histogram, Labels: []string{"operation"},
		Help: "Seconds the filesystem took to answer a kernel FUSE request, by operation (lookup, getattr, read, readdir, write, flush, ...)."},
	{Name: MetricFUSEErrors, Type: Counter, Labels: []string{"operation", "errno"},
		Help: "FUSE requests answered with an error, by operation and errno name (ENOENT, EIO, ...)."},
	{Name: MetricTokenRefreshes, Type: Counter, Labels: []string{"result"}, AfterToken: true,
		Help: "IAM token exchanges by result (success, error)."},
	{Name: MetricTokenExpiresIn, Type: Gauge, AfterToken: true,
		Help: "Seconds until the IAM access token the server holds expires; it is refreshed at 80% of its lifetime, so a value near 0 means refreshes are failing."},
}

// LookupServerMetric returns the description of a server metric family.
func LookupServerMetric(name string) (ServerMetric, bool) {
	for _, m := range ServerMetrics {
		if m.Name == name {
			return m, true
		}
	}
	return ServerMetric{}, false
}
