package mounter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/mounterapi"
	"github.com/cosmount/cosmount/pkg/volume"
)

// Unpublish implements mounterapi.Service. It answers OK only when
// everything the server accepted is in the bucket or its failure was
// already reported to the writer: while uploads are pending it asks the
// server to flush and answers Unavailable (kubelet retries), keeping the
// server. A server is never killed while it may still be uploading.
func (m *Mounter) Unpublish(ctx context.Context, req *mounterapi.UnpublishRequest) (*mounterapi.UnpublishResponse, error) {
	if req.Target == "" || !filepath.IsAbs(req.Target) {
		return nil, status.Error(codes.InvalidArgument, "an absolute target path is required")
	}
	target := filepath.Clean(req.Target)
	unlock := m.locks.lock(target)
	defer unlock()
	dir := m.volumeDir(target)
	rec, err := readRecord(dir)
	if err != nil {
		// An unreadable record must not make the target impossible to
		// clean up: treat it as a dead server's.
		klog.ErrorS(err, "Unreadable record; unpublishing without it", "target", target)
	}
	if rec == nil {
		if err := m.unmountTarget(target); err != nil {
			return nil, status.Errorf(codes.Internal, "%v", err)
		}
		os.RemoveAll(dir)
		if err := removeTarget(target); err != nil {
			return nil, err
		}
		m.probes.forget(target)
		return &mounterapi.UnpublishResponse{Action: mounterapi.ActionNotPublished}, nil
	}
	if req.VolumeID != "" && req.VolumeID != rec.Spec.VolumeID {
		return nil, status.Errorf(codes.NotFound, "target %s serves volume %s, not %s", target, rec.Spec.VolumeID, req.VolumeID)
	}
	if rec.Died == nil && procAlive(rec.PID, rec.ProcStart) {
		if err := m.stopServer(ctx, rec); err != nil {
			return nil, err
		}
	}
	if err := m.unmountTarget(target); err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	m.abortLeftUploads(ctx, rec, dir)
	if err := removeCgroup(rec.Cgroup); err != nil {
		klog.ErrorS(err, "Removing the server's memory cgroup", "target", target)
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, status.Errorf(codes.Internal, "removing the state of %s: %v", target, err)
	}
	if err := removeTarget(target); err != nil {
		return nil, err
	}
	m.mu.Lock()
	delete(m.servers, target)
	m.mu.Unlock()
	m.probes.forget(target)
	klog.InfoS("Unmounted volume", "volumeID", rec.Spec.VolumeID, "target", target, "serverDied", rec.Died != nil)
	return &mounterapi.UnpublishResponse{Action: mounterapi.ActionUnmounted}, nil
}

// stopServer ends a live server once nothing is pending: SIGTERM (it
// flushes, unmounts and exits), and SIGKILL only if it then hangs with
// nothing left to upload.
func (m *Mounter) stopServer(ctx context.Context, rec *Record) error {
	id, target := rec.Spec.VolumeID, rec.Spec.Target
	st, err := m.control.status(ctx, rec.ControlSocket)
	if err != nil {
		return status.Errorf(codes.Unavailable, "volume %s at %s: the server (pid %d) does not answer (%v); it is not stopped while it may still hold data to upload, and the unpublish will be retried", id, target, rec.PID, err)
	}
	if p := st.Pending; p.Files > 0 {
		if _, err := m.control.flush(ctx, rec.ControlSocket); err != nil {
			klog.ErrorS(err, "Asking the server to flush", "volumeID", id, "target", target)
		}
		m.metrics.unpublishWaits.Inc()
		klog.InfoS("Unpublish waits for uploads", "volumeID", id, "target", target, "files", p.Files, "bytes", p.Bytes)
		return status.Errorf(codes.Unavailable, "volume %s at %s: %d file(s), %s, not yet uploaded; the server keeps uploading and the unpublish will be retried",
			id, target, p.Files, volume.FormatSize(p.Bytes))
	}
	m.mu.Lock()
	s := m.servers[target]
	if s != nil {
		s.stopping = true
	}
	m.mu.Unlock()
	if err := signalServer(rec.PID, rec.ProcStart, syscall.SIGTERM); err != nil {
		return status.Errorf(codes.Internal, "%v", err)
	}
	if waitGone(ctx, rec.PID, rec.ProcStart, m.opts.StopTimeout) {
		return nil
	}
	st, err = m.control.status(ctx, rec.ControlSocket)
	if err == nil && st.Pending.Files == 0 {
		klog.InfoS("The server did not exit after SIGTERM with nothing left to upload; killing it", "volumeID", id, "target", target, "pid", rec.PID)
		if err := killGroup(rec.PID, rec.ProcStart); err != nil {
			return status.Errorf(codes.Internal, "%v", err)
		}
		return nil
	}
	return status.Errorf(codes.Unavailable, "volume %s at %s: the server (pid %d) is still stopping after %s; the unpublish will be retried", id, target, rec.PID, m.opts.StopTimeout)
}

// abortUploadsTimeout bounds the clean-up of a dead server's uploads.
const abortUploadsTimeout = 2 * time.Minute

// abortLeftUploads aborts the multipart uploads a server that ended without
// finishing them (killed, OOM, crashed) left in its journal, so that their
// parts do not stay in the bucket, billed, forever. A server that stopped
// cleanly finished or aborted its own, and its journal is empty. This is
// best effort: a failure is logged (the uploads stay until the bucket's
// abort-incomplete-uploads rule, which buckets the driver creates carry).
func (m *Mounter) abortLeftUploads(ctx context.Context, rec *Record, dir string) {
	journal := filepath.Join(dir, journalFile)
	if fi, err := os.Stat(journal); err != nil || fi.Size() == 0 {
		return
	}
	credFile := filepath.Join(dir, volume.CredentialFileName(rec.Spec.Auth))
	ctx, cancel := context.WithTimeout(ctx, abortUploadsTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, m.opts.Binary, rec.Spec.AbortUploadsArgs(credFile, journal)...)
	cmd.Env = m.opts.Env
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		klog.ErrorS(err, "Aborting the multipart uploads a dead server left", "volumeID", rec.Spec.VolumeID, "target", rec.Spec.Target, "output", strings.TrimSpace(string(out)))
		return
	}
	klog.InfoS("Aborted the multipart uploads the server left unfinished", "volumeID", rec.Spec.VolumeID, "target", rec.Spec.Target, "output", strings.TrimSpace(string(out)))
}

// removeTarget removes kubelet's target directory once nothing is mounted on it.
func removeTarget(target string) error {
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return status.Errorf(codes.Internal, "removing target %s: %v", target, err)
	}
	return nil
}

// unmountTarget removes the FUSE mount on target, if any: a dead one
// lazily (nothing can be flushed through it, and a process still holding it
// open must not keep it busy), a live one normally. A server that got
// SIGTERM has usually unmounted already.
func (m *Mounter) unmountTarget(target string) error {
	p := m.probes.get(target)
	for attempt := 0; attempt < 3; attempt++ {
		pr := p.probe(m.opts.ProbeTimeout)
		if pr.err != nil {
			return pr.err
		}
		var err error
		switch pr.state {
		case NotMounted:
			return nil
		case Foreign:
			return fmt.Errorf("%s is %s; not unmounting it", target, pr.state)
		case Dead, Unresponsive:
			err = unix.Unmount(target, unix.MNT_DETACH)
		default:
			err = fusermountU(target)
			if err != nil {
				err = unix.Unmount(target, 0)
			}
			if err != nil && attempt == 2 {
				err = unix.Unmount(target, unix.MNT_DETACH)
			}
		}
		if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			klog.V(2).InfoS("Unmount attempt failed", "target", target, "state", pr.state.String(), "err", err)
		}
	}
	if pr := p.probe(m.opts.ProbeTimeout); pr.state != NotMounted {
		return fmt.Errorf("%s is still mounted (%s)", target, pr.state)
	}
	return nil
}

func fusermountU(target string) error {
	for _, bin := range []string{"fusermount3", "fusermount"} {
		path, err := exec.LookPath(bin)
		if err != nil {
			continue
		}
		out, err := exec.Command(path, "-u", target).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s -u: %w: %s", bin, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	return errors.New("no fusermount3 or fusermount in PATH")
}

// Status implements mounterapi.Service.
func (m *Mounter) Status(ctx context.Context, req *mounterapi.StatusRequest) (*mounterapi.VolumeStatus, error) {
	if req.Target == "" || !filepath.IsAbs(req.Target) {
		return nil, status.Error(codes.InvalidArgument, "an absolute target path is required")
	}
	target := filepath.Clean(req.Target)
	rec, err := readRecord(m.volumeDir(target))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	if rec == nil {
		return nil, status.Errorf(codes.NotFound, "nothing is published at %s", target)
	}
	vs := m.volumeStatus(ctx, rec, req.Pending)
	return &vs, nil
}

// List implements mounterapi.Service. Each volume costs at most one probe
// timeout, and they are looked at in parallel.
func (m *Mounter) List(ctx context.Context, req *mounterapi.ListRequest) (*mounterapi.ListResponse, error) {
	all, err := m.records()
	if err != nil {
		klog.ErrorS(err, "Some volume records cannot be read; they are left out of the list")
	}
	recs := all[:0]
	for _, r := range all {
		if req.VolumeID == "" || r.Spec.VolumeID == req.VolumeID {
			recs = append(recs, r)
		}
	}
	out := make([]mounterapi.VolumeStatus, len(recs))
	var wg sync.WaitGroup
	for i := range recs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			out[i] = m.volumeStatus(ctx, &recs[i], false)
		}(i)
	}
	wg.Wait()
	return &mounterapi.ListResponse{Volumes: out}, nil
}

// volumeStatus describes rec as it is now; withServer also asks the server
// for what it has pending.
func (m *Mounter) volumeStatus(ctx context.Context, rec *Record, withServer bool) mounterapi.VolumeStatus {
	vs := mounterapi.VolumeStatus{
		Target: rec.Spec.Target, VolumeID: rec.Spec.VolumeID, Spec: rec.Spec,
		PID: rec.PID, Started: rec.Started, CredentialsDigest: rec.CredentialsDigest, MemoryLimit: rec.MemoryLimit,
	}
	if rec.Died != nil {
		vs.State, vs.Reason, vs.Message, vs.Died = mounterapi.StateDead, rec.Reason, rec.Message, rec.Died
		return vs
	}
	m.mu.Lock()
	s := m.servers[rec.Spec.Target]
	stopping := s != nil && s.stopping
	m.mu.Unlock()
	if stopping {
		vs.State, vs.Reason, vs.Message = mounterapi.StateStopping, "Unpublishing", "the volume is being unpublished"
		return vs
	}
	if !procAlive(rec.PID, rec.ProcStart) {
		// Gone, and the watcher has not recorded it yet.
		vs.State, vs.Reason, vs.Message = mounterapi.StateDead, "ServerGone", fmt.Sprintf("the server (pid %d) is gone", rec.PID)
		return vs
	}
	pr := m.probes.get(rec.Spec.Target).probe(m.opts.ProbeTimeout)
	switch pr.state {
	case Healthy:
		vs.State, vs.Usage = mounterapi.StateHealthy, pr.usage
	case Unresponsive:
		vs.State, vs.Reason = mounterapi.StateUnresponsive, "ServerUnresponsive"
		vs.Message = fmt.Sprintf("the server (pid %d) runs but its mount did not answer within %s", rec.PID, m.opts.ProbeTimeout)
	case NotMounted:
		vs.State, vs.Reason = mounterapi.StateDead, "NotMounted"
		vs.Message = fmt.Sprintf("the server (pid %d) runs but %s is not mounted", rec.PID, rec.Spec.Target)
	default:
		vs.State, vs.Reason = mounterapi.StateDead, "MountBroken"
		vs.Message = fmt.Sprintf("the mount at %s is %s although the server (pid %d) runs", rec.Spec.Target, pr.state, rec.PID)
	}
	if withServer && vs.State != mounterapi.StateUnresponsive {
		if st, err := m.control.status(ctx, rec.ControlSocket); err == nil {
			p := st.Pending
			vs.Pending = &p
		}
	}
	return vs
}

// Shutdown runs when the mounter itself is asked to stop (its pod is
// deleted, the node shuts down): the container runtime will end every
// server in it anyway, so each is told to flush and unmount first while
// there is time. Their volumes are recorded dead with the reason.
func (m *Mounter) Shutdown(ctx context.Context) {
	m.mu.Lock()
	var live []*server
	for _, s := range m.servers {
		select {
		case <-s.exited:
			continue
		default:
		}
		s.stopping = true
		live = append(live, s)
	}
	m.mu.Unlock()
	recs, _ := m.records()
	for i := range recs {
		r := &recs[i]
		if r.Died != nil || !procAlive(r.PID, r.ProcStart) {
			continue
		}
		m.markDead(r, "MounterStopped", "the mounter stopped (its pod was deleted or the node shuts down); the server flushed what it could and stopped")
		_ = signalServer(r.PID, r.ProcStart, syscall.SIGTERM)
	}
	for _, s := range live {
		select {
		case <-s.exited:
		case <-ctx.Done():
			klog.InfoS("Servers still flushing when the mounter's stop grace ran out", "count", len(live))
			return
		}
	}
}

// keyedMutex serializes operations on one target.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*refMutex
}

type refMutex struct {
	sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*refMutex{}
	}
	l, ok := k.locks[key]
	if !ok {
		l = &refMutex{}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		k.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
