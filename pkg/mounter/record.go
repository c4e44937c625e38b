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

	"github.com/cosmount/cosmount/pkg/volume"
)

// Names inside a volume's state directory.
const (
	recordFile  = "volume.json"
	controlFile = "control.sock"
	// journalFile lists the multipart uploads the server started and has
	// not finished (cosmount mount --upload-journal).
	journalFile = "uploads.journal"
	// maxSocketPath is the longest path a unix socket can be bound to
	// (sun_path is 108 bytes including the terminating NUL).
	maxSocketPath = 107
)

// Record is what the mounter remembers about one published target. It is
// stored as JSON in the target's state directory (a hostPath), so that a
// restarted mounter knows what it served, which servers still run, and which
// died and why.
type Record struct {
	Spec volume.Spec `json:"spec"`
	PID  int         `json:"pid"`
	// ProcStart is the process start time from /proc/<pid>/stat; it tells
	// our server from an unrelated process that later reused the PID.
	ProcStart uint64    `json:"procStart"`
	Started   time.Time `json:"started"`
	// CredentialsDigest identifies the credential file's content.
	CredentialsDigest string `json:"credentialsDigest"`
	// ControlSocket is the server's control socket.
	ControlSocket string `json:"controlSocket"`
	// MemoryLimit is the server's memory budget in bytes (0: none), and
	// Cgroup the memory cgroup directory enforcing it ("" when none could be
	// made).
	MemoryLimit int64  `json:"memoryLimit,omitempty"`
	Cgroup      string `json:"cgroup,omitempty"`
	// Died is set once the server is known to be gone without an unpublish;
	// Reason and Message say why. The record then stays, and the volume is
	// reported dead, until it is unpublished.
	Died    *time.Time `json:"died,omitempty"`
	Reason  string     `json:"reason,omitempty"`
	Message string     `json:"message,omitempty"`
}

// TargetHash is the short name of target's state directory. A hash keeps the
// name short and free of path separators whatever kubelet's target path looks
// like; it is also a metrics label that tells two publishes of one volume
// apart without putting the pod's path in every series.
func TargetHash(target string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(target)))
	return hex.EncodeToString(sum[:])[:16]
}

// volumeDir is the state directory of target.
func (m *Mounter) volumeDir(target string) string {
	return filepath.Join(m.opts.StateDir, TargetHash(target))
}

// writeFileAtomic replaces path with data so that a reader (the server
// re-reading its token file) sees either the old or the new content, never
// a truncated file.
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

func writeRecord(dir string, r *Record) error {
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
		return nil, fmt.Errorf("state record %s: %w", filepath.Join(dir, recordFile), err)
	}
	if r.Spec.Target == "" || TargetHash(r.Spec.Target) != filepath.Base(dir) {
		return nil, fmt.Errorf("state record %s names target %q, which does not belong in this directory", filepath.Join(dir, recordFile), r.Spec.Target)
	}
	return &r, nil
}

// records lists every readable record in the state directory. A record that
// cannot be read does not hide the others: it is returned in the error
// (joined), next to the good ones.
func (m *Mounter) records() ([]Record, error) {
	entries, err := os.ReadDir(m.opts.StateDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []Record
	var errs []error
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		r, err := readRecord(filepath.Join(m.opts.StateDir, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if r != nil {
			out = append(out, *r)
		}
	}
	return out, errors.Join(errs...)
}
