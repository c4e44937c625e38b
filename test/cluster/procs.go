//go:build cluster

package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one daemon the suite started. Its PID is also appended to the
// work directory's pids file, so a teardown that runs after this process
// died (run.sh's trap) can still end it by PID.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // valid once done is closed
}

// procs starts and stops the suite's daemons.
type procs struct {
	work, logs string
	mu         sync.Mutex
	list       []*proc
}

// start runs bin with args, logging to logs/name.log. The daemon gets
// SIGKILL if the test process dies first, so a crashed run leaves no
// control-plane process behind.
func (ps *procs) start(name, bin string, args []string, env ...string) (*proc, error) {
	logPath := filepath.Join(ps.logs, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	rec, err := os.OpenFile(filepath.Join(ps.work, "pids"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err == nil {
		fmt.Fprintf(rec, "%d %s\n", cmd.Process.Pid, name)
		rec.Close()
	}
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	logStep("started %s (pid %d), log %s", name, cmd.Process.Pid, logPath)
	return p, nil
}

// exited reports whether the process has ended, with its error.
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM, waits up to grace, then SIGKILL.
func (p *proc) stop(grace time.Duration) {
	if done, _ := p.exited(); done {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	logStep("stopped %s (pid %d)", p.name, p.cmd.Process.Pid)
}

// stopAll stops the daemons in reverse start order.
func (ps *procs) stopAll(grace time.Duration) {
	ps.mu.Lock()
	list := append([]*proc(nil), ps.list...)
	ps.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		list[i].stop(grace)
	}
}

// waitFor polls check until it succeeds, the context ends, or one of the
// watched processes exits (then its log tail is in the error).
func waitFor(ctx context.Context, what string, timeout time.Duration, watch []*proc, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		for _, p := range watch {
			if done, err := p.exited(); done {
				return fmt.Errorf("%s: %s exited (%v) while waiting; log tail:\n%s", what, p.name, err, tail(p.log, 30))
			}
		}
		if last = check(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not after %s: %w", what, timeout, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// recordedPIDs reads the pids file a run wrote, newest first.
func recordedPIDs(work string) []int {
	b, err := os.ReadFile(filepath.Join(work, "pids"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if pid, err := strconv.Atoi(f[0]); err == nil {
			pids = append([]int{pid}, pids...)
		}
	}
	return pids
}

// killPID ends pid if it is still the process we started: its command line
// must mention the work directory (every daemon gets a path in it), which
// guards against a recycled PID.
func killPID(pid int, work string) error {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil // gone
	}
	if !strings.Contains(string(cmdline), work) {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(st), ") Z ") {
			return nil // a zombie of ours is reaped by our parent
		}
		time.Sleep(100 * time.Millisecond)
	}
	return syscall.Kill(pid, syscall.SIGKILL)
}

var stepStart = time.Now()

// logStep prints one line of the suite's story, with the time since start.
func logStep(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[e2e %6.1fs] %s\n", time.Since(stepStart).Seconds(), fmt.Sprintf(format, args...))
}
