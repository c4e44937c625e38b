//go:build cluster

package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cosmount/cosmount/internal/testproc"
)

// procs starts and stops the suite's daemons. Each daemon's PID is also
// appended to the work directory's pids file, so a teardown that runs after
// this process died (run.sh's trap) can still end it by PID.
type procs struct {
	work, logs string
	mu         sync.Mutex
	list       []*testproc.Process
}

// start runs bin with args, logging to logs/name.log. The daemon gets
// SIGKILL if the test process dies first, so a crashed run leaves no
// control-plane process behind.
func (ps *procs) start(name, bin string, args []string, env ...string) (*testproc.Process, error) {
	logPath := filepath.Join(ps.logs, name+".log")
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	p, err := testproc.Start(name, logPath, 0o644, cmd)
	if err != nil {
		return nil, err
	}
	rec, err := os.OpenFile(filepath.Join(ps.work, "pids"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err == nil {
		fmt.Fprintf(rec, "%d %s\n", p.PID(), name)
		rec.Close()
	}
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	logStep("started %s (pid %d), log %s", name, p.PID(), logPath)
	return p, nil
}

// stopAll stops the daemons in reverse start order: SIGTERM, up to grace,
// then SIGKILL.
func (ps *procs) stopAll(grace time.Duration) {
	ps.mu.Lock()
	list := append([]*testproc.Process(nil), ps.list...)
	ps.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].Exited() {
			continue
		}
		list[i].Stop(grace)
		logStep("stopped %s (pid %d)", list[i].Name, list[i].PID())
	}
}

// waitFor polls check until it succeeds, the context ends, or one of the
// watched processes exits (then its log tail is in the error).
func waitFor(ctx context.Context, what string, timeout time.Duration, watch []*testproc.Process, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		for _, p := range watch {
			if p.Exited() {
				tail, err := testproc.Tail(p.LogPath, 30)
				if err != nil {
					tail = err.Error()
				}
				return fmt.Errorf("%s: %s exited (%v) while waiting; log tail:\n%s", what, p.Name, p.Err(), tail)
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
		// Gone, or a zombie of ours that our parent reaps.
		if !testproc.Running(pid) {
			return nil
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
