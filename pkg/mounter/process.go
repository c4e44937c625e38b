package mounter

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
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

// waitGone polls until the recorded process has exited or timeout passes.
// Polling works the same for our own children and for servers adopted after a
// plugin restart, which we cannot wait(2) for.
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

// stopServer asks the server to flush and unmount (SIGTERM) and, if it does
// not exit within grace, kills its whole process group.
func stopServer(ctx context.Context, pid int, start uint64, grace time.Duration) error {
	if !procAlive(pid, start) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal cosmount server %d: %w", pid, err)
	}
	if waitGone(ctx, pid, start, grace) {
		return nil
	}
	// The server was started as the leader of its own process group.
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill cosmount server %d: %w", pid, err)
	}
	// Use a fresh context: the caller's may already be done, and a killed
	// process exits at once.
	if !waitGone(context.Background(), pid, start, 10*time.Second) {
		return fmt.Errorf("cosmount server %d did not exit after SIGKILL", pid)
	}
	return nil
}
