package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/cosmount/cosmount/internal/testproc"
)

// The three binaries of the product, as `make build` names them.
var binaries = []string{"cosmount", "cosmount-csi", "cosmount-emulator"}

// buildBinaries builds the three commands into dir. Import paths rather than
// ./cmd/... so that it works from any directory inside the module (the test
// runs in test/demo).
func buildBinaries(ctx context.Context, dir string) error {
	args := []string{"build", "-trimpath", "-o", dir + "/"}
	for _, b := range binaries {
		args = append(args, "github.com/cosmount/cosmount/cmd/"+b)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	return nil
}

// proc is a long-running child (the emulator, the plugin) with its output in
// a log file.
type proc struct {
	name string
	*testproc.Process
}

func startProc(name, logPath, bin string, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	// Its own process group: a Ctrl-C in the terminal reaches only the demo,
	// which then stops everything in order (unpublish before the plugin,
	// the plugin before the emulator).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p, err := testproc.Start(name, logPath, 0o600, cmd)
	if err != nil {
		return nil, err
	}
	return &proc{name: name, Process: p}, nil
}

func (p *proc) pid() int { return p.PID() }

// stop sends SIGTERM to the process (by its PID), waits up to timeout for a
// clean exit and kills it after that.
func (p *proc) stop(timeout time.Duration) error {
	if p.Exited() {
		return fmt.Errorf("%s had already exited: %v", p.name, p.Err())
	}
	killed, err := p.Stop(timeout)
	switch {
	case err != nil:
		return fmt.Errorf("stop %s: %w", p.name, err)
	case killed:
		return fmt.Errorf("%s did not stop within %s of SIGTERM; killed it", p.name, timeout)
	case p.Err() != nil && !p.TerminatedBySIGTERM():
		// Killed by the SIGTERM itself is stopped too: that happens when
		// the demo is interrupted before the child set up its handler.
		return fmt.Errorf("%s exited with %v after SIGTERM", p.name, p.Err())
	}
	return nil
}

// logTail is the end of the process log, for error messages.
func (p *proc) logTail() string {
	tail, err := testproc.Tail(p.LogPath, 15)
	if err != nil {
		return ""
	}
	return "\n--- last lines of " + p.LogPath + " ---\n" + tail
}

// waitFor polls cond until it is true, returns an error, ctx ends or timeout
// passes. The timeouts are generous: the machine may be busy.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// mountsUnder lists the mount points at or below dir, with their file system
// types.
func mountsUnder(dir string) (map[string]string, error) {
	mounts, err := testproc.MountsUnder(dir)
	if err != nil {
		return nil, err
	}
	found := map[string]string{}
	for _, m := range mounts {
		found[m.Point] = m.FSType
	}
	return found, nil
}

// processRuns reports whether pid is a live (not zombie) process.
func processRuns(pid int) bool { return testproc.Running(pid) }

// parentPID is the parent of pid, from /proc/<pid>/stat (0 if unknown).
func parentPID(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	var state string
	var ppid int
	if _, err := fmt.Sscan(string(data[i+1:]), &state, &ppid); err != nil {
		return 0
	}
	return ppid
}
