// Package mounter is the node's mounter: the long-lived process that owns
// every cosmount FUSE server on a node, outside the CSI node plugin's
// lifecycle (see docs/architecture.md). It starts one server process per
// published target, keeps a record of each in a state directory that
// survives its own restart, swaps credentials on republish, watches its
// servers and remembers why one died, probes mounts without ever piling up
// threads on a stuck one, and stops a server at unpublish only once nothing
// it accepted is still being uploaded. It implements mounterapi.Service,
// whose errors are gRPC statuses. It never imports CSI code.
package mounter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/mounterapi"
	"github.com/cosmount/cosmount/pkg/volume"
)

// DefaultPath is the PATH given to servers; bazil.org/fuse finds fusermount3 through it.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// serverOverhead is memory a server needs beyond its buffers (memory_limit):
// the Go runtime, the FUSE and HTTP machinery, caches of names.
const serverOverhead = 64 * volume.MiB

// Options configures a Mounter.
type Options struct {
	// StateDir holds one directory per target (created 0700): the record,
	// the credential file and the server's control socket.
	StateDir string
	// Binary is the cosmount executable.
	Binary string
	// MountTimeout bounds the start of a server until its mount is live.
	// Default 60s.
	MountTimeout time.Duration
	// StopTimeout is how long a server that has nothing left to upload may
	// take to unmount and exit after SIGTERM. Default 60s.
	StopTimeout time.Duration
	// ProbeTimeout bounds one look at a mount. Default 5s.
	ProbeTimeout time.Duration
	// Env is the complete environment of servers ("K=V"); the mounter's own
	// is never inherited wholesale, so no credential leaks in by accident.
	// Empty means just PATH=DefaultPath.
	Env []string
	// Log receives the servers' stdout and stderr: the mounter's own stderr
	// by default, which in a cluster is the mounter container's log.
	Log io.Writer
	// ServerMemoryLimit is each server's memory budget in bytes; 0 means
	// none. It is a hard limit (a memory cgroup of the server's own) where
	// cgroups can be written, and always the Go runtime's soft limit.
	ServerMemoryLimit int64
	// NodeOptions are node-scope mount options every server gets
	// (temp_dir).
	NodeOptions volume.Options
	// Version is reported by Version.
	Version string
}

// server is a running server process the mounter watches.
type server struct {
	pid   int
	start uint64
	// exited is closed once the process is gone; state is then set for a
	// child of this mounter (nil for one adopted after a restart).
	exited chan struct{}
	state  *os.ProcessState
	// waited: a child of this mounter, whose Wait reports its end; adopted
	// servers are polled instead.
	waited bool
	// ready: its mount came up (a death before is Publish's to report).
	// stopping: an unpublish or shutdown is ending it. Guarded by Mounter.mu.
	ready, stopping bool
}

// Mounter starts, watches and stops cosmount servers.
type Mounter struct {
	opts    Options
	cg      *memCgroups
	probes  probers
	control controlClient
	metrics *metrics
	locks   keyedMutex

	mu      sync.Mutex
	servers map[string]*server // guarded by mu; by target
	done    chan struct{}      // closed by Close
}

var _ mounterapi.Service = (*Mounter)(nil)

// New validates opts, finds out whether servers can get memory cgroups, and
// returns a Mounter. Call Recover before serving requests.
func New(opts Options) (*Mounter, error) {
	if opts.StateDir == "" || !filepath.IsAbs(opts.StateDir) {
		return nil, fmt.Errorf("state directory %q must be an absolute path", opts.StateDir)
	}
	// <state>/<16 hex>/control.sock must fit in a unix socket address.
	if n := len(filepath.Join(opts.StateDir, TargetHash("/"), controlFile)); n > maxSocketPath {
		return nil, fmt.Errorf("state directory %q is too long: control sockets in it would need %d bytes, at most %d fit", opts.StateDir, n, maxSocketPath)
	}
	if opts.Binary == "" {
		return nil, errors.New("cosmount binary is required")
	}
	if opts.MountTimeout <= 0 {
		opts.MountTimeout = 60 * time.Second
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 60 * time.Second
	}
	if opts.ProbeTimeout <= 0 {
		opts.ProbeTimeout = 5 * time.Second
	}
	if len(opts.Env) == 0 {
		opts.Env = []string{"PATH=" + DefaultPath}
	}
	if opts.Log == nil {
		opts.Log = os.Stderr
	}
	if opts.ServerMemoryLimit < 0 || (opts.ServerMemoryLimit > 0 && opts.ServerMemoryLimit < serverOverhead+2*volume.MinPartSize) {
		return nil, fmt.Errorf("server memory limit %s is too small: a server needs at least %s", volume.FormatSize(opts.ServerMemoryLimit), volume.FormatSize(serverOverhead+2*volume.MinPartSize))
	}
	if opts.NodeOptions.TempDir != "" && !filepath.IsAbs(opts.NodeOptions.TempDir) {
		return nil, fmt.Errorf("temporary directory %q must be an absolute path", opts.NodeOptions.TempDir)
	}
	if opts.NodeOptions.CacheDir != "" && !filepath.IsAbs(opts.NodeOptions.CacheDir) {
		return nil, fmt.Errorf("read-cache directory %q must be an absolute path", opts.NodeOptions.CacheDir)
	}
	m := &Mounter{opts: opts, servers: map[string]*server{}, done: make(chan struct{})}
	m.metrics = newMetrics()
	if opts.ServerMemoryLimit > 0 {
		cg, err := detectMemCgroups()
		if err != nil {
			klog.InfoS("Servers get no memory cgroup of their own; their memory budget is only the Go runtime's soft limit", "reason", err.Error())
		} else {
			m.cg = cg
			klog.InfoS("Each server runs in a memory cgroup of its own", "parent", cg.root, "limit", volume.FormatSize(opts.ServerMemoryLimit))
		}
	}
	return m, nil
}

// Recover runs once at start: servers recorded by an earlier instance that
// still run are adopted and watched; records of servers that are gone are
// marked dead, and their dead mounts are left in place (a pod that still
// holds one sees "transport endpoint is not connected", never the empty
// directory beneath) until kubelet unpublishes them.
func (m *Mounter) Recover() {
	recs, err := m.records()
	if err != nil {
		klog.ErrorS(err, "Some volume records cannot be read; those volumes are skipped")
	}
	running, dead := 0, 0
	for _, r := range recs {
		if r.Died != nil {
			dead++
			continue
		}
		if procAlive(r.PID, r.ProcStart) {
			m.mu.Lock()
			m.servers[r.Spec.Target] = &server{pid: r.PID, start: r.ProcStart, exited: make(chan struct{}), ready: true}
			m.mu.Unlock()
			klog.InfoS("Adopted a running cosmount server", "volumeID", r.Spec.VolumeID, "target", r.Spec.Target, "pid", r.PID)
			running++
			continue
		}
		r := r
		m.markDead(&r, "ServerGone", fmt.Sprintf("the server (pid %d) ended while the mounter was not running; a mounter container that stops ends every server in it", r.PID))
		dead++
	}
	go m.watchAdopted()
	klog.InfoS("Recovered volumes", "running", running, "dead", dead)
}

// Close stops the mounter's background work (not its servers).
func (m *Mounter) Close() {
	select {
	case <-m.done:
	default:
		close(m.done)
	}
}

// watchAdopted polls servers that are not our children (adopted after a
// restart) and reports the ones that end.
func (m *Mounter) watchAdopted() {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-m.done:
			return
		case <-t.C:
		}
		m.mu.Lock()
		var gone []string
		for target, s := range m.servers {
			select {
			case <-s.exited:
				continue
			default:
			}
			if !s.waited && !procAlive(s.pid, s.start) {
				gone = append(gone, target)
			}
		}
		m.mu.Unlock()
		for _, target := range gone {
			m.mu.Lock()
			s := m.servers[target]
			m.mu.Unlock()
			if s != nil {
				m.serverExited(target, s)
			}
		}
	}
}

// serverExited handles the end of a server that nobody asked to stop.
func (m *Mounter) serverExited(target string, s *server) {
	m.mu.Lock()
	select {
	case <-s.exited:
	default:
		close(s.exited)
	}
	stopping, ready := s.stopping, s.ready
	m.mu.Unlock()
	if stopping || !ready {
		return // an unpublish or a failing Publish takes care of it
	}
	unlock := m.locks.lock(target)
	defer unlock()
	rec, err := readRecord(m.volumeDir(target))
	if err != nil || rec == nil || rec.PID != s.pid || rec.Died != nil {
		return
	}
	oom := rec.Cgroup != "" && oomKills(rec.Cgroup) > 0
	reason, msg := exitReason(s.state, oom, rec.MemoryLimit)
	m.markDead(rec, reason, msg)
}

// markDead records that rec's server is gone, logs it and counts it.
func (m *Mounter) markDead(rec *Record, reason, msg string) {
	// Counted first: whoever sees the record sees the count too.
	m.metrics.deaths.WithLabelValues(reason).Inc()
	now := time.Now().UTC()
	rec.Died, rec.Reason, rec.Message = &now, reason, msg
	if err := writeRecord(m.volumeDir(rec.Spec.Target), rec); err != nil {
		klog.ErrorS(err, "Recording a dead server", "target", rec.Spec.Target)
	}
	klog.ErrorS(nil, "A cosmount server died; its volume stays unusable (ENOTCONN) until the pod is deleted and the volume unpublished",
		"volumeID", rec.Spec.VolumeID, "target", rec.Spec.Target, "pid", rec.PID, "reason", reason, "message", msg)
}

// Version implements mounterapi.Service.
func (m *Mounter) Version(ctx context.Context, req *mounterapi.VersionRequest) (*mounterapi.VersionResponse, error) {
	return &mounterapi.VersionResponse{API: mounterapi.APIVersion, Version: m.opts.Version}, nil
}

// invalid is the status of a refused spec: the message names the field or
// option, as FieldError and OptionError do.
func invalid(err error) error { return status.Error(codes.InvalidArgument, err.Error()) }

// checkRequest validates what Publish got, before anything is touched.
func (m *Mounter) checkRequest(req *mounterapi.PublishRequest) error {
	spec := &req.Spec
	if err := spec.Validate(); err != nil {
		return invalid(err)
	}
	if err := req.Credentials.Validate(spec.Auth); err != nil {
		return invalid(fmt.Errorf("credentials: %w", err))
	}
	if limit := m.opts.ServerMemoryLimit; limit > 0 && spec.Options.MemoryLimit > limit-serverOverhead {
		return invalid(&volume.OptionError{Option: "memory_limit", Value: volume.FormatSize(spec.Options.MemoryLimit),
			Reason: fmt.Sprintf("exceeds what the node's server memory budget of %s leaves for buffers (%s); ask the cluster admin to raise the budget", volume.FormatSize(limit), volume.FormatSize(limit-serverOverhead))})
	}
	// The memory tier of the read cache comes on top of the buffers, in the
	// same cgroup.
	if limit := m.opts.ServerMemoryLimit; limit > 0 && spec.Options.CacheMemory > 0 &&
		spec.Options.MemoryLimit+spec.Options.CacheMemory > limit-serverOverhead {
		return invalid(&volume.OptionError{Option: "cache_memory", Value: volume.FormatSize(spec.Options.CacheMemory),
			Reason: fmt.Sprintf("with memory_limit %s exceeds what the node's server memory budget of %s leaves for buffers and cache (%s); lower either, or ask the cluster admin to raise the budget",
				volume.FormatSize(spec.Options.MemoryLimit), volume.FormatSize(limit), volume.FormatSize(limit-serverOverhead))})
	}
	if spec.Options.CacheSize > 0 && m.opts.NodeOptions.CacheDir == "" {
		return invalid(&volume.OptionError{Option: "cache_size", Value: volume.FormatSize(spec.Options.CacheSize),
			Reason: "needs a read-cache directory on the node, and this node's mounter has none (the chart's readCache.enabled, the mounter's --cache-dir); use cache_memory, or ask the cluster admin"})
	}
	return nil
}

// Publish implements mounterapi.Service: it mounts spec at its target, or
// on a republish of the same volume only swaps the credential file. It never
// unmounts or restarts a live server: doing so under a running pod loses
// data.
func (m *Mounter) Publish(ctx context.Context, req *mounterapi.PublishRequest) (*mounterapi.PublishResponse, error) {
	if err := m.checkRequest(req); err != nil {
		return nil, err
	}
	spec := req.Spec
	target := spec.Target
	unlock := m.locks.lock(target)
	defer unlock()
	dir := m.volumeDir(target)
	rec, err := readRecord(dir)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "reading the record of %s: %v", target, err)
	}
	digest := req.Credentials.Digest(spec.Auth)
	if rec != nil {
		return m.republish(ctx, rec, req, digest)
	}
	mounted := false
	defer func() {
		if !mounted {
			m.probes.forget(target) // nothing is served there
		}
	}()
	pr := m.probes.get(target).probe(m.opts.ProbeTimeout)
	if pr.err != nil {
		return nil, status.Errorf(codes.Internal, "inspecting %s: %v", target, pr.err)
	}
	if pr.state != NotMounted {
		return nil, status.Errorf(codes.FailedPrecondition, "target %s is already mounted (%s), and not by this mounter", target, pr.state)
	}
	created, err := ensureDir(target)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(m.opts.StateDir, 0o700); err != nil {
		return nil, status.Errorf(codes.Internal, "state directory: %v", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, status.Errorf(codes.Internal, "state directory: %v", err)
	}
	rec, err = m.start(ctx, &spec, req.Credentials, dir, digest)
	if err != nil {
		os.RemoveAll(dir)
		if created {
			os.Remove(target)
		}
		return nil, err
	}
	mounted = true
	klog.InfoS("Mounted volume", "volumeID", spec.VolumeID, "target", target, "pid", rec.PID, "auth", spec.Auth, "memoryLimit", rec.MemoryLimit, "cgroup", rec.Cgroup != "")
	return &mounterapi.PublishResponse{Action: mounterapi.ActionMounted, Volume: m.volumeStatus(ctx, rec, false)}, nil
}

// republish handles Publish on a target that has a record.
func (m *Mounter) republish(ctx context.Context, rec *Record, req *mounterapi.PublishRequest, digest string) (*mounterapi.PublishResponse, error) {
	target := rec.Spec.Target
	if rec.Died != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "the server of volume %s at %s is gone since %s: %s; the mount stays unusable until the pod is deleted and the volume unpublished",
			rec.Spec.VolumeID, target, rec.Died.Format(time.RFC3339), rec.Message)
	}
	if !rec.Spec.Equivalent(&req.Spec) {
		return nil, status.Errorf(codes.AlreadyExists, "target %s already serves volume %s with different %s",
			target, rec.Spec.VolumeID, strings.Join(rec.Spec.Differences(&req.Spec), ", "))
	}
	if rec.CredentialsDigest == digest {
		return &mounterapi.PublishResponse{Action: mounterapi.ActionUnchanged, Volume: m.volumeStatus(ctx, rec, false)}, nil
	}
	credFile := filepath.Join(m.volumeDir(target), volume.CredentialFileName(rec.Spec.Auth))
	if err := writeFileAtomic(credFile, volume.CredentialFileContent(rec.Spec.Auth, req.Credentials), 0o600); err != nil {
		return nil, status.Errorf(codes.Internal, "replacing the credentials of %s: %v", target, err)
	}
	rec.CredentialsDigest = digest
	if err := writeRecord(m.volumeDir(target), rec); err != nil {
		return nil, status.Errorf(codes.Internal, "updating the record of %s: %v", target, err)
	}
	klog.V(2).InfoS("Credentials replaced; the server reads them at its next token exchange", "volumeID", rec.Spec.VolumeID, "target", target)
	return &mounterapi.PublishResponse{Action: mounterapi.ActionCredentialsUpdated, Volume: m.volumeStatus(ctx, rec, false)}, nil
}

// ensureDir creates the target directory if needed and reports whether it did.
func ensureDir(path string) (bool, error) {
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		return false, nil
	case err == nil:
		return false, status.Errorf(codes.InvalidArgument, "target %s exists and is not a directory", path)
	case !errors.Is(err, fs.ErrNotExist):
		return false, status.Errorf(codes.Internal, "stat target: %v", err)
	}
	if err := os.MkdirAll(path, 0o750); err != nil {
		return false, status.Errorf(codes.Internal, "create target: %v", err)
	}
	return true, nil
}

// start writes the credential file, starts the server and waits until it
// reports its mount live. On failure nothing is left running or mounted.
func (m *Mounter) start(ctx context.Context, spec *volume.Spec, creds volume.Credentials, dir, digest string) (*Record, error) {
	credFile := filepath.Join(dir, volume.CredentialFileName(spec.Auth))
	if err := writeFileAtomic(credFile, volume.CredentialFileContent(spec.Auth, creds), 0o600); err != nil {
		return nil, status.Errorf(codes.Internal, "writing the credential file: %v", err)
	}
	sock := filepath.Join(dir, controlFile)
	args := spec.Args(credFile, m.opts.NodeOptions,
		"--control-socket", sock, "--volume-id", spec.VolumeID, "--start-timeout", m.opts.MountTimeout.String(),
		"--upload-journal", filepath.Join(dir, journalFile))
	cmd := exec.Command(m.opts.Binary, args...)
	cmd.Env = append(append([]string{}, m.opts.Env...), "COSMOUNT_READY_FD=3")
	limit := m.opts.ServerMemoryLimit
	if limit > 0 {
		// The soft limit makes the Go runtime collect harder as the budget
		// nears, well before the cgroup's hard limit ends the process.
		cmd.Env = append(cmd.Env, fmt.Sprintf("GOMEMLIMIT=%d", limit*8/10))
	}
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = m.opts.Log, m.opts.Log
	// Its own process group: a signal to the mounter's group does not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	ready, err := startProcess(cmd)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "starting %s: %v", m.opts.Binary, err)
	}
	defer ready.Close()
	pid := cmd.Process.Pid
	_, procStart, _, _ := procState(pid)
	s := &server{pid: pid, start: procStart, exited: make(chan struct{}), waited: true}
	m.mu.Lock()
	m.servers[spec.Target] = s
	m.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		m.mu.Lock()
		s.state = cmd.ProcessState
		m.mu.Unlock()
		m.serverExited(spec.Target, s)
	}()
	rec := &Record{
		Spec: *spec, PID: pid, ProcStart: procStart, Started: time.Now().UTC(),
		CredentialsDigest: digest, ControlSocket: sock, MemoryLimit: limit,
	}
	m.confine(rec)
	fail := func(err error) (*Record, error) {
		m.mu.Lock()
		s.stopping = true
		m.mu.Unlock()
		if kerr := killGroup(pid, procStart); kerr != nil {
			klog.ErrorS(kerr, "Stopping a server that failed to start", "target", spec.Target)
		}
		if uerr := m.unmountTarget(spec.Target); uerr != nil {
			klog.ErrorS(uerr, "Unmounting after a failed start", "target", spec.Target)
		}
		_ = removeCgroup(rec.Cgroup)
		m.mu.Lock()
		delete(m.servers, spec.Target)
		m.mu.Unlock()
		return nil, err
	}
	if err := writeRecord(dir, rec); err != nil {
		return fail(status.Errorf(codes.Internal, "writing the record: %v", err))
	}
	if err := m.waitReady(ctx, ready, s); err != nil {
		return fail(err)
	}
	if pr := m.probes.get(spec.Target).probe(m.opts.ProbeTimeout); pr.state != Healthy {
		return fail(status.Errorf(codes.Internal, "the server reported its mount live, but %s is %s", spec.Target, pr.state))
	}
	m.mu.Lock()
	s.ready = true
	m.mu.Unlock()
	return rec, nil
}

// confine gives the server its memory cgroup and its OOM score.
func (m *Mounter) confine(rec *Record) {
	pid := rec.PID
	if m.cg != nil && rec.MemoryLimit > 0 {
		dir, err := m.cg.create(TargetHash(rec.Spec.Target), rec.MemoryLimit)
		if err == nil {
			err = addToCgroup(dir, pid)
			if err != nil {
				_ = removeCgroup(dir)
			}
		}
		if err != nil {
			klog.ErrorS(err, "The server runs without a memory cgroup of its own", "target", rec.Spec.Target)
		} else {
			rec.Cgroup = dir
		}
	}
	budget := rec.MemoryLimit
	if budget == 0 {
		budget = rec.Spec.Options.MemoryLimit + serverOverhead
	}
	if err := setOOMScoreAdj(pid, oomScoreAdj(budget)); err != nil {
		klog.ErrorS(err, "Setting the server's oom_score_adj", "target", rec.Spec.Target, "pid", pid)
	}
}

// waitReady reads the server's readiness report.
func (m *Mounter) waitReady(ctx context.Context, ready *os.File, s *server) error {
	type report struct {
		line string
		err  error
	}
	lines := make(chan report, 1)
	go func() {
		line, err := bufio.NewReader(ready).ReadString('\n')
		lines <- report{strings.TrimSpace(line), err}
	}()
	timer := time.NewTimer(m.opts.MountTimeout)
	defer timer.Stop()
	select {
	case r := <-lines:
		if r.line == "ok" {
			return nil
		}
		if msg, ok := strings.CutPrefix(r.line, "error: "); ok {
			return status.Errorf(codes.Internal, "cosmount: %s", msg)
		}
		// No report: the server exited, or closed its end without one.
		select {
		case <-s.exited:
			return status.Errorf(codes.Internal, "cosmount exited before its mount was live (%v); see the mounter's log", s.state)
		case <-timer.C:
			return status.Errorf(codes.DeadlineExceeded, "cosmount closed its readiness report without reporting its mount live, and still runs after %s", m.opts.MountTimeout)
		case <-ctx.Done():
			return status.Errorf(codes.Canceled, "waiting for the mount: %v", ctx.Err())
		}
	case <-timer.C:
		return status.Errorf(codes.DeadlineExceeded, "cosmount did not report its mount live within %s", m.opts.MountTimeout)
	case <-ctx.Done():
		return status.Errorf(codes.Canceled, "waiting for the mount: %v", ctx.Err())
	}
}
