package mounter

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

const (
	recordFile = "volume.json"
	logFile    = "cosmount.log"
	// metricsSocketFile is where the server serves its Prometheus metrics.
	metricsSocketFile = "metrics.sock"
	// maxSocketPath is the longest path a unix socket can be bound to
	// (sun_path is 108 bytes including the terminating NUL).
	maxSocketPath = 107
)

// Record is what the mounter remembers about one published target. It is
// stored as JSON in the target's state directory so that a restarted plugin
// can still find, stop and clean up the server process.
type Record struct {
	Target   string `json:"target"`
	VolumeID string `json:"volumeID"`
	PID      int    `json:"pid"`
	// ProcStart is the process start time from /proc/<pid>/stat; it tells
	// our server from an unrelated process that later reused the PID.
	ProcStart uint64    `json:"procStart"`
	ArgsHash  string    `json:"argsHash"`
	Auth      AuthType  `json:"auth"`
	Started   time.Time `json:"started"`
	// MetricsSocket is the unix socket on which the server serves its
	// Prometheus metrics; empty when it was started without one.
	MetricsSocket string `json:"metricsSocket,omitempty"`
}

// TargetHash is the short name of target's state directory. A hash keeps the
// name short and free of path separators whatever kubelet's target path looks
// like; the driver also uses it as a metrics label that tells two publishes
// of one volume apart without putting the pod's path in every series.
func TargetHash(target string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(target)))
	return hex.EncodeToString(sum[:])[:16]
}

// volumeDir is the state directory of target.
func (m *Mounter) volumeDir(target string) string {
	return filepath.Join(m.opts.StateDir, TargetHash(target))
}

// writeFileAtomic replaces path with data so that a reader (the cosmount
// server re-reading its token file) sees either the old or the new content,
// never a truncated file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(name, path); err != nil {
		return err
	}
	ok = true
	return nil
}

func (m *Mounter) writeRecord(dir string, r *Record) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, recordFile), data, 0o600)
}

// readRecord returns the record stored in dir, or nil if there is none.
func readRecord(dir string) (*Record, error) {
	data, err := os.ReadFile(filepath.Join(dir, recordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("state record %s: %w", dir, err)
	}
	return &r, nil
}

// Records lists every volume record in the state directory.
func (m *Mounter) Records() ([]Record, error) {
	entries, err := os.ReadDir(m.opts.StateDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []Record
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		r, err := readRecord(filepath.Join(m.opts.StateDir, e.Name()))
		if err != nil {
			return nil, err
		}
		if r != nil {
			out = append(out, *r)
		}
	}
	return out, nil
}

// logTail returns the last lines of a volume's server log for error messages,
// so a failed mount explains itself without anyone logging into the node.
func logTail(dir string) string {
	f, err := os.Open(filepath.Join(dir, logFile))
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 2048
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := st.Size() - max
	if off < 0 {
		off = 0
	}
	buf := make([]byte, max)
	n, _ := f.ReadAt(buf, off)
	return string(buf[:n])
}
