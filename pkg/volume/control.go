package volume

// The control socket is how the mounter talks to a running server: a unix
// socket (the server's --control-socket) that serves HTTP.
const (
	// ControlMetricsPath serves the server's Prometheus metrics.
	ControlMetricsPath = "/metrics"
	// ControlStatusPath answers GET with a ServerStatus.
	ControlStatusPath = "/v1/status"
	// ControlFlushPath starts, on POST, an upload of every file with unsaved
	// changes in the background and answers 202 with a ServerStatus.
	ControlFlushPath = "/v1/flush"
)

// Pending counts files whose changes are not in the store yet.
type Pending struct {
	// Files and Bytes: changes no writer has been told failed, whether an
	// upload of them is running or not yet started. They are lost if the
	// server stops before these reach zero.
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
	// FailedFiles and FailedBytes: changes whose upload failed and whose
	// writer was told so by close or fsync. They are retried by a flush but
	// do not hold up an unpublish: the writer knows.
	FailedFiles int   `json:"failedFiles"`
	FailedBytes int64 `json:"failedBytes"`
}

// ServerStatus is a server's answer on ControlStatusPath.
type ServerStatus struct {
	PID     int     `json:"pid"`
	Pending Pending `json:"pending"`
	// Flushing is true while a flush asked for on ControlFlushPath runs.
	Flushing bool `json:"flushing"`
	// MemoryInUse and MemoryHighWater are the mount's buffer bytes.
	MemoryInUse     int64 `json:"memoryInUse"`
	MemoryHighWater int64 `json:"memoryHighWater"`
}
