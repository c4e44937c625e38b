package mounter

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procState returns the state letter and start time (clock ticks since boot)
// of pid from /proc/<pid>/stat, or ok=false when there is no such process.
func procState(pid int) (state byte, start uint64, ok bool, err error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, err
	}
	// The command name (field 2) may contain spaces and parentheses; the
	// fields after the last ')' are fixed: state is field 3, starttime 22.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, 0, false, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	rest := strings.Fields(string(data[i+1:]))
	if len(rest) < 20 {
		return 0, 0, false, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	start, err = strconv.ParseUint(rest[19], 10, 64)
	if err != nil {
		return 0, 0, false, fmt.Errorf("/proc/%d/stat starttime: %w", pid, err)
	}
	return rest[0][0], start, true, nil
}

// procAlive reports whether the process recorded as (pid, start) still runs.
// A zombie counts as gone: it has exited and only waits to be reaped.
func procAlive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	state, s, ok, err := procState(pid)
	if err != nil || !ok {
		return false
	}
	return state != 'Z' && s == start
}

// waitGone polls until the recorded process has exited, timeout passes or
// ctx ends. Polling works the same for our own children and for servers
// adopted after a mounter restart, which we cannot wait(2) for.
func waitGone(ctx context.Context, pid int, start uint64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if !procAlive(pid, start) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return !procAlive(pid, start)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// signalServer sends sig to the recorded server if it still is that process.
func signalServer(pid int, start uint64, sig syscall.Signal) error {
	if !procAlive(pid, start) {
		return nil
	}
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal cosmount server %d: %w", pid, err)
	}
	return nil
}

// killGroup kills the server's whole process group (it leads one) and waits
// for it to go.
func killGroup(pid int, start uint64) error {
	if !procAlive(pid, start) {
		return nil
	}
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill cosmount server %d: %w", pid, err)
	}
	if !waitGone(context.Background(), pid, start, 10*time.Second) {
		return fmt.Errorf("cosmount server %d did not exit after SIGKILL", pid)
	}
	return nil
}

// exitReason turns how a child ended into a reason and a message for
// people. oomKilled says the kernel's OOM killer ended a process in the
// server's memory cgroup.
func exitReason(ps *os.ProcessState, oomKilled bool, limit int64) (reason, msg string) {
	if ps == nil {
		return "ServerGone", "the server ended while the mounter was not watching it (the mounter restarted)"
	}
	ws, _ := ps.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled() && ws.Signal() == syscall.SIGKILL && oomKilled:
		return "ServerOOMKilled", fmt.Sprintf("the server was killed by the kernel's OOM killer: it exceeded its memory budget of %d MiB", limit>>20)
	case ws.Signaled():
		return "ServerKilled", fmt.Sprintf("the server was killed by signal %d (%s)", int(ws.Signal()), ws.Signal())
	default:
		return "ServerExited", fmt.Sprintf("the server exited with status %d (its mount was unmounted outside the mounter, or it failed: see its log)", ws.ExitStatus())
	}
}

// startProcess starts cmd and returns the reader end of its readiness pipe
// (the server writes "ok" or "error: ..." on fd 3, see cmd/cosmount).
func startProcess(cmd *exec.Cmd) (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.ExtraFiles = []*os.File{w}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	w.Close()
	return r, nil
}
