package testproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Process is a long-running child a test program started and must stop: an
// emulator, a CSI plugin, a FUSE server.
type Process struct {
	Name    string // for messages
	LogPath string // the file its stdout and stderr go to
	Cmd     *exec.Cmd

	done chan struct{} // closed once the process has exited and was reaped
	err  error         // exit status, valid once done is closed
}

// Start starts cmd with its stdout and stderr appended to logPath (created
// with perm if missing). The caller sets up cmd (environment, SysProcAttr
// for a process group of its own, ...); Start only starts it and reaps it
// when it exits.
func Start(name, logPath string, perm os.FileMode, cmd *exec.Cmd) (*Process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, perm)
	if err != nil {
		return nil, err
	}
	// The child has its own copy of the descriptor once started.
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, Cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID is the process ID.
func (p *Process) PID() int { return p.Cmd.Process.Pid }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the exit status (nil for a clean exit); only valid once Done is closed.
func (p *Process) Err() error { return p.err }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM to this one process (by PID, not its group), waits up to
// grace for it to exit and kills it after that. When Stop returns the process
// has exited. killed says whether grace ran out; err is set only when
// SIGTERM could not be sent. A process that had already exited is left alone.
func (p *Process) Stop(grace time.Duration) (killed bool, err error) {
	if p.Exited() {
		return false, nil
	}
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return p.Kill(), fmt.Errorf("SIGTERM to %s (pid %d): %w", p.Name, p.PID(), err)
	}
	select {
	case <-p.done:
		return false, nil
	case <-time.After(grace):
		return p.Kill(), nil
	}
}

// Kill sends SIGKILL to the process and waits until it has exited. It
// reports whether the process still ran.
func (p *Process) Kill() bool {
	if p.Exited() {
		return false
	}
	_ = p.Cmd.Process.Kill()
	<-p.done
	return true
}

// TerminatedBySIGTERM reports whether the exit status is "killed by SIGTERM":
// a child stopped before it installed its handler ends that way, which is a
// stop all the same.
func (p *Process) TerminatedBySIGTERM() bool {
	var exit *exec.ExitError
	if !errors.As(p.err, &exit) {
		return false
	}
	ws, ok := exit.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM
}

// WaitMounted polls until dir is a mount point (of fstype if that is not
// empty), p exits, ctx ends or timeout passes. With live it also waits until
// a stat of dir succeeds: a stat goes through the FUSE server, which answers
// only once it has finished its INIT handshake.
func WaitMounted(ctx context.Context, p *Process, dir, fstype string, live bool, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if IsMounted(dir, fstype) {
			if !live {
				return nil
			}
			if _, err := os.Stat(dir); err == nil {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before %s was mounted (%v)", p.Name, dir, p.err)
		case <-ctx.Done():
			return fmt.Errorf("%s: %s not mounted after %s: %w", p.Name, dir, timeout, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Tail returns the last n lines of the file at path.
func Tail(path string, n int) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n"), nil
}
