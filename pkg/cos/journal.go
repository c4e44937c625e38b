package cos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"

	"k8s.io/klog/v2"
)

// UploadTracker learns of every multipart upload a Client starts and of its
// end (completed or aborted), so that a crashed program's uploads can be
// found and aborted later. *UploadJournal is the file-backed one.
type UploadTracker interface {
	Started(bucket, key, uploadID string)
	Ended(uploadID string)
}

// PendingUpload is a multipart upload that was started and not seen to end.
type PendingUpload struct {
	Bucket   string `json:"bucket"`
	Key      string `json:"key"`
	UploadID string `json:"id"`
}

// journalRecord is one line of the journal: {"op":"start",...} or
// {"op":"end","id":...}.
type journalRecord struct {
	Op string `json:"op"`
	PendingUpload
}

// UploadJournal is an append-only file of the multipart uploads one server
// process has started and not completed or aborted yet: one JSON object per
// line, "start" with bucket, key and upload id, "end" with the id. A server
// that dies leaves its open uploads listed; the next server with the same
// journal, or `cosmount abort-uploads`, aborts them (AbortPending). The
// file is rewritten with only the open uploads when it grows, and a torn
// last line (a crash in the middle of a write) is ignored. A lock file
// (the journal's name + ".lock") keeps a second process from using the
// journal while its owner lives. Records are not fsynced: a process crash
// keeps them (the kernel has them), a node crash may lose the last ones,
// which the bucket's lifecycle rule then cleans up.
type UploadJournal struct {
	path string
	lock *os.File

	mu      sync.Mutex
	f       *os.File                 // guarded by mu
	open    map[string]PendingUpload // guarded by mu: by upload id
	records int                      // guarded by mu: lines in the file
}

var _ UploadTracker = (*UploadJournal)(nil)

// ErrJournalInUse: another live process holds the journal.
var ErrJournalInUse = errors.New("upload journal is in use by another process")

// maxJournalLine bounds one record: a key is at most 1 KiB, escaped at most 6x.
const maxJournalLine = 16 << 10

// OpenUploadJournal opens (or creates, mode 0600) the journal at path, locks
// it and reads the uploads it lists as open.
func OpenUploadJournal(path string) (*UploadJournal, error) {
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("upload journal: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", path, ErrJournalInUse)
		}
		return nil, fmt.Errorf("upload journal %s: lock: %w", path, err)
	}
	j := &UploadJournal{path: path, lock: lock, open: map[string]PendingUpload{}}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		j.unlock()
		return nil, fmt.Errorf("upload journal: %w", err)
	}
	j.f = f
	open, n, err := ParseUploadJournal(f)
	if err != nil {
		j.Close()
		return nil, fmt.Errorf("upload journal %s: %w", path, err)
	}
	for _, u := range open {
		j.open[u.UploadID] = u
	}
	j.records = n
	return j, nil
}

// ParseUploadJournal reads a journal and returns the uploads it lists as
// open, in the order they were started, and how many records it read.
// Lines that are not records (a torn last line) are skipped; only a read
// error is an error.
func ParseUploadJournal(r io.Reader) ([]PendingUpload, int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxJournalLine)
	open := map[string]int{}
	var order []PendingUpload
	n := 0
	for sc.Scan() {
		var rec journalRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil || rec.UploadID == "" {
			continue
		}
		n++
		switch rec.Op {
		case "start":
			if rec.Bucket == "" || rec.Key == "" {
				continue
			}
			if _, dup := open[rec.UploadID]; !dup {
				open[rec.UploadID] = len(order)
				order = append(order, rec.PendingUpload)
			}
		case "end":
			if i, ok := open[rec.UploadID]; ok {
				order[i].UploadID = ""
				delete(open, rec.UploadID)
			}
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, bufio.ErrTooLong) {
		return nil, n, err
	}
	out := make([]PendingUpload, 0, len(open))
	for _, u := range order {
		if u.UploadID != "" {
			out = append(out, u)
		}
	}
	return out, n, nil
}

// Pending returns the uploads listed as open, sorted by bucket, key and id.
func (j *UploadJournal) Pending() []PendingUpload {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]PendingUpload, 0, len(j.open))
	for _, u := range j.open {
		out = append(out, u)
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].Bucket != out[b].Bucket {
			return out[a].Bucket < out[b].Bucket
		}
		if out[a].Key != out[b].Key {
			return out[a].Key < out[b].Key
		}
		return out[a].UploadID < out[b].UploadID
	})
	return out
}

// Started records an upload the client started.
func (j *UploadJournal) Started(bucket, key, uploadID string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	u := PendingUpload{Bucket: bucket, Key: key, UploadID: uploadID}
	j.open[uploadID] = u
	j.appendLocked(journalRecord{Op: "start", PendingUpload: u})
}

// Ended records that an upload was completed or aborted.
func (j *UploadJournal) Ended(uploadID string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := j.open[uploadID]; !ok {
		return
	}
	delete(j.open, uploadID)
	j.appendLocked(journalRecord{Op: "end", PendingUpload: PendingUpload{UploadID: uploadID}})
	if j.records > 1000 && j.records > 4*len(j.open) {
		if err := j.compactLocked(); err != nil {
			klog.ErrorS(err, "Compacting the upload journal failed; it keeps growing", "journal", j.path)
		}
	}
}

// appendLocked writes one record with one write(2), so that a crash leaves
// at most the last line torn. A failure is logged: the upload itself goes
// on, and the lifecycle rule is the backstop.
func (j *UploadJournal) appendLocked(rec journalRecord) {
	if j.f == nil {
		return
	}
	b, err := json.Marshal(rec)
	if err == nil {
		_, err = j.f.Write(append(b, '\n'))
	}
	if err != nil {
		klog.ErrorS(err, "Recording a multipart upload in the journal failed", "journal", j.path, "uploadID", rec.UploadID)
		return
	}
	j.records++
}

// compactLocked rewrites the journal with only the open uploads: a new file
// renamed over the old one, so a crash leaves one or the other.
func (j *UploadJournal) compactLocked() error {
	tmp, err := os.CreateTemp(filepath.Dir(j.path), filepath.Base(j.path)+".tmp-*")
	if err != nil {
		return err
	}
	w := bufio.NewWriter(tmp)
	for _, u := range j.open {
		b, _ := json.Marshal(journalRecord{Op: "start", PendingUpload: u})
		w.Write(append(b, '\n'))
	}
	err = errors.Join(w.Flush(), tmp.Chmod(0o600), tmp.Sync())
	if err == nil {
		err = os.Rename(tmp.Name(), j.path)
	}
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	// Keep appending to the new file (tmp is open for writing at its end).
	j.f.Close()
	j.f, j.records = tmp, len(j.open)
	return nil
}

// AbortPending aborts every upload the journal lists as open, with c, and
// forgets those that are gone (aborted now, or completed or aborted
// before). It returns how many it aborted and the errors of the others,
// which stay listed for a later attempt.
func (j *UploadJournal) AbortPending(ctx context.Context, c *Client) (int, error) {
	var errs []error
	n := 0
	for _, u := range j.Pending() {
		err := c.AbortMultipartUpload(ctx, u.Bucket, u.Key, u.UploadID)
		if err != nil {
			errs = append(errs, fmt.Errorf("abort upload of %s/%s: %w", u.Bucket, u.Key, err))
			continue
		}
		n++
		klog.InfoS("Aborted a multipart upload left by an earlier server", "bucket", u.Bucket, "key", u.Key)
		j.Ended(u.UploadID)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.open) == 0 && j.records > 0 {
		// Cleared: start the file afresh.
		if err := j.compactLocked(); err != nil {
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}

// Close closes the journal and releases its lock. Uploads still open stay
// listed.
func (j *UploadJournal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	var err error
	if j.f != nil {
		err = j.f.Close()
		j.f = nil
	}
	j.unlock()
	return err
}

func (j *UploadJournal) unlock() {
	if j.lock != nil {
		_ = syscall.Flock(int(j.lock.Fd()), syscall.LOCK_UN)
		_ = j.lock.Close()
		j.lock = nil
	}
}
