// Package mounter owns the node side of a published volume outside the CSI
// protocol: one `cosmount` server process per target path, the per-volume
// state directory (credential file, JSON record, server log), waiting for the
// FUSE mount to become live, health checks, unmounting, and cleaning up after
// crashed servers or a restarted plugin. It never imports CSI code.
package mounter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// Errors callers branch on.
var (
	// ErrNotPublished: the mounter has no record of the target.
	ErrNotPublished = errors.New("target is not published by this mounter")
	// ErrTargetBusy: something is already mounted on the target.
	ErrTargetBusy = errors.New("target is already mounted")
)

// DefaultPath is the PATH given to servers; bazil.org/fuse finds fusermount3 through it.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Options configures a Mounter.
type Options struct {
	// StateDir holds one directory per target (created 0700).
	StateDir string
	// Binary is the cosmount executable.
	Binary string
	// MountTimeout bounds the wait for a new mount to become live. Default 60s.
	MountTimeout time.Duration
	// StopTimeout is how long a server may take to flush and exit after
	// SIGTERM before its process group is killed. Default 60s.
	StopTimeout time.Duration
	// ProbeTimeout bounds one stat of a mount in health checks. Default 5s.
	ProbeTimeout time.Duration
	// Env is the complete environment of server processes ("K=V"); the
	// plugin's own environment is never inherited so no credential or proxy
	// setting leaks in by accident. Empty means just PATH=DefaultPath.
	Env []string
}

// Mounter starts and stops cosmount servers. It is safe for concurrent use on
// different targets; the driver serializes calls for one target.
type Mounter struct {
	opts Options
}

// New validates opts and returns a Mounter.
func New(opts Options) (*Mounter, error) {
	if opts.StateDir == "" || !filepath.IsAbs(opts.StateDir) {
		return nil, fmt.Errorf("state directory %q must be an absolute path", opts.StateDir)
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
	return &Mounter{opts: opts}, nil
}

// Status is the mounter's view of one target.
type Status struct {
	State State
	// Record is nil when the mounter has not published the target.
	Record *Record
}

// Status reports the state of target and its record, if any.
func (m *Mounter) Status(target string) (Status, error) {
	target = filepath.Clean(target)
	rec, err := readRecord(m.volumeDir(target))
	if err != nil {
		return Status{}, err
	}
	st, err := probe(target, m.opts.ProbeTimeout)
	return Status{State: st, Record: rec}, err
}

// Compatible reports whether v would start the same server as the one
// recorded in rec: same volume and same command line. Credentials are not
// part of the comparison; they change on every token renewal.
func (m *Mounter) Compatible(v Volume, rec *Record) bool {
	if rec == nil {
		return false
	}
	dir := m.volumeDir(v.Target)
	return rec.VolumeID == v.VolumeID && rec.Auth == v.Auth &&
		rec.ArgsHash == argsHash(v.Args(filepath.Join(dir, credentialFileName(v.Auth))))
}

// Mount writes the volume's credential file, starts its server and returns
// once the target is a live FUSE mount. On any failure it leaves nothing
// behind: no process, no mount, no state directory.
func (m *Mounter) Mount(ctx context.Context, v Volume) error {
	if err := v.Validate(); err != nil {
		return err
	}
	v.Target = filepath.Clean(v.Target)
	dir := m.volumeDir(v.Target)
	if rec, err := readRecord(dir); err != nil {
		return err
	} else if rec != nil {
		if procAlive(rec.PID, rec.ProcStart) {
			return fmt.Errorf("%w: server %d is running for %s", ErrTargetBusy, rec.PID, v.Target)
		}
		// A crashed server's leftovers: clear them before starting afresh.
		if err := m.Unmount(ctx, v.Target); err != nil {
			return fmt.Errorf("clean up after the previous server of %s: %w", v.Target, err)
		}
	}
	st, err := probe(v.Target, m.opts.ProbeTimeout)
	if err != nil {
		return err
	}
	if st != NotMounted {
		return fmt.Errorf("%w: %s is %s", ErrTargetBusy, v.Target, st)
	}
	if err := os.MkdirAll(m.opts.StateDir, 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	rec, err := m.start(v, dir)
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	if err := m.waitMounted(ctx, v.Target, rec, dir); err != nil {
		tail := logTail(dir)
		if cerr := m.Unmount(context.Background(), v.Target); cerr != nil {
			klog.ErrorS(cerr, "Cleaning up a failed mount", "target", v.Target)
		}
		if tail != "" {
			return fmt.Errorf("%w; cosmount log:\n%s", err, tail)
		}
		return err
	}
	klog.InfoS("Mounted volume", "volumeID", v.VolumeID, "target", v.Target, "pid", rec.PID, "auth", v.Auth)
	return nil
}

// start launches the server and writes its record.
func (m *Mounter) start(v Volume, dir string) (*Record, error) {
	credFile := filepath.Join(dir, credentialFileName(v.Auth))
	if err := writeFileAtomic(credFile, credentialFileContent(v.Auth, v.Credentials), 0o600); err != nil {
		return nil, fmt.Errorf("write credential file: %w", err)
	}
	args := v.Args(credFile)
	cmdArgs := args
	sock := filepath.Join(dir, metricsSocketFile)
	if len(sock) > maxSocketPath {
		// The volume still works; only its metrics are not collected.
		klog.InfoS("State directory path too long for a metrics socket; per-volume metrics are off", "volumeID", v.VolumeID, "path", sock)
		sock = ""
	} else {
		cmdArgs = withMetricsSocket(args, sock)
	}
	logf, err := os.OpenFile(filepath.Join(dir, logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// Not CommandContext: the server must outlive this RPC and even the plugin.
	cmd := exec.Command(m.opts.Binary, cmdArgs...)
	cmd.Env = m.opts.Env
	cmd.Dir = "/"
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Its own process group: a signal to the plugin's group (a restart, a
	// Ctrl-C in a test) does not reach the servers.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", m.opts.Binary, err)
	}
	// Reap the child when it exits; liveness is checked through /proc so that
	// adopted servers (not our children) are handled the same way.
	go cmd.Wait() //nolint:errcheck // the exit status is in the server log
	pid := cmd.Process.Pid
	_, start, ok, err := procState(pid)
	if err != nil || !ok {
		// It died at once; keep going so waitMounted reports the log tail.
		start = 0
	}
	rec := &Record{
		Target:    v.Target,
		VolumeID:  v.VolumeID,
		PID:       pid,
		ProcStart: start,
		ArgsHash:  argsHash(args),
		Auth:      v.Auth,
		Started:   time.Now().UTC(),
		// The hash above covers only the volume's own arguments, so that
		// Compatible does not depend on where the state directory is.
		MetricsSocket: sock,
	}
	if err := m.writeRecord(dir, rec); err != nil {
		syscall.Kill(-pid, syscall.SIGKILL)
		return nil, err
	}
	return rec, nil
}

// waitMounted polls until target is a live FUSE mount, the server exits, the
// timeout passes or ctx ends.
func (m *Mounter) waitMounted(ctx context.Context, target string, rec *Record, dir string) error {
	deadline := time.Now().Add(m.opts.MountTimeout)
	for {
		st, err := probe(target, m.opts.ProbeTimeout)
		if err != nil {
			return err
		}
		if st == Healthy {
			return nil
		}
		if !procAlive(rec.PID, rec.ProcStart) {
			return fmt.Errorf("cosmount exited before %s was mounted", target)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s to be mounted (state: %s)", m.opts.MountTimeout, target, st)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s to be mounted: %w", target, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// SameCredentials reports whether target's credential file already holds c,
// so that a republish with an unchanged token does nothing at all.
func (m *Mounter) SameCredentials(target string, c Credentials) (bool, error) {
	dir := m.volumeDir(filepath.Clean(target))
	rec, err := readRecord(dir)
	if err != nil {
		return false, err
	}
	if rec == nil {
		return false, ErrNotPublished
	}
	cur, err := os.ReadFile(filepath.Join(dir, credentialFileName(rec.Auth)))
	if err != nil {
		return false, err
	}
	return bytes.Equal(cur, credentialFileContent(rec.Auth, c)), nil
}

// UpdateCredentials atomically replaces target's credential file. The running
// server re-reads it at its next token exchange; nothing is remounted.
func (m *Mounter) UpdateCredentials(target string, c Credentials) error {
	dir := m.volumeDir(filepath.Clean(target))
	rec, err := readRecord(dir)
	if err != nil {
		return err
	}
	if rec == nil {
		return ErrNotPublished
	}
	if err := validateCredentials(rec.Auth, c); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, credentialFileName(rec.Auth)), credentialFileContent(rec.Auth, c), 0o600)
}

// Unmount stops target's server (SIGTERM: it flushes and unmounts), unmounts
// whatever FUSE mount is left (a dead one lazily) and removes the state
// directory. It succeeds when there is nothing to do, and works for servers
// started by an earlier instance of the plugin.
func (m *Mounter) Unmount(ctx context.Context, target string) error {
	target = filepath.Clean(target)
	dir := m.volumeDir(target)
	rec, err := readRecord(dir)
	if err != nil {
		return err
	}
	if rec != nil {
		if err := stopServer(ctx, rec.PID, rec.ProcStart, m.opts.StopTimeout); err != nil {
			return err
		}
	}
	if err := m.unmountTarget(target); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if rec != nil {
		klog.InfoS("Unmounted volume", "volumeID", rec.VolumeID, "target", target)
	}
	return nil
}

// unmountTarget removes the FUSE mount on target, if any. A server that got
// SIGTERM has usually unmounted already.
func (m *Mounter) unmountTarget(target string) error {
	for attempt := 0; attempt < 3; attempt++ {
		st, err := probe(target, m.opts.ProbeTimeout)
		if err != nil {
			return err
		}
		switch st {
		case NotMounted:
			return nil
		case Foreign:
			return fmt.Errorf("%s is %s; not unmounting it", target, st)
		case Dead:
			// Nothing can be flushed through a dead mount; detach it so a
			// process still holding it open cannot keep it busy.
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
			klog.V(2).InfoS("Unmount attempt failed", "target", target, "state", st.String(), "err", err)
		}
	}
	st, err := probe(target, m.opts.ProbeTimeout)
	if err != nil {
		return err
	}
	if st != NotMounted {
		return fmt.Errorf("%s is still mounted (%s)", target, st)
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

// Recover runs when the plugin starts: servers recorded by an earlier
// instance that still run are adopted (later unpublishes stop them by PID);
// records of servers that died are cleaned up, including their dead mounts.
// It returns the adopted records.
func (m *Mounter) Recover(ctx context.Context) ([]Record, error) {
	recs, err := m.Records()
	if err != nil {
		return nil, err
	}
	var adopted []Record
	var errs []error
	for _, r := range recs {
		if procAlive(r.PID, r.ProcStart) {
			klog.InfoS("Adopted running cosmount server", "volumeID", r.VolumeID, "target", r.Target, "pid", r.PID)
			adopted = append(adopted, r)
			continue
		}
		klog.InfoS("Cleaning up after a cosmount server that is gone", "volumeID", r.VolumeID, "target", r.Target, "pid", r.PID)
		if err := m.Unmount(ctx, r.Target); err != nil {
			errs = append(errs, fmt.Errorf("clean up %s: %w", r.Target, err))
		}
	}
	return adopted, errors.Join(errs...)
}
