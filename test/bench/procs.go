package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat. It is
// 100 on every Linux architecture Go supports without cgo to ask sysconf.
const clockTicks = 100

// cpuSeconds returns the user+system CPU time a process has used so far.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces and parentheses; the
	// fields after the last ')' are fixed: state is field 3, utime 14, stime 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return float64(utime+stime) / clockTicks, nil
}

// peakRSSMiB returns VmHWM, the process's peak resident set size so far.
func peakRSSMiB(pid int) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/status VmHWM: %w", pid, err)
		}
		return kb / 1024, nil
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmHWM", pid)
}

// proc is a child process the benchmark started and must stop.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // exit status, valid after done
}

// startProc starts a child in its own process group, so that a Ctrl-C at the
// terminal reaches only the benchmark, which then stops its children in order
// (a FUSE server killed before its mount is released leaves a dead mount).
func startProc(name, logPath string, env []string, argv ...string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to grace, then SIGKILLs this one process.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// cleanups is a LIFO list of teardown steps that may run either from the
// normal flow or from the signal handler; each step runs at most once.
type cleanups struct {
	mu    sync.Mutex
	steps []*cleanupStep
}

type cleanupStep struct {
	once sync.Once
	fn   func()
}

// add registers fn and returns a function that runs it now (at most once).
func (c *cleanups) add(fn func()) func() {
	s := &cleanupStep{fn: fn}
	c.mu.Lock()
	c.steps = append(c.steps, s)
	c.mu.Unlock()
	return func() { s.once.Do(s.fn) }
}

// runAll runs every step not yet run, newest first.
func (c *cleanups) runAll() {
	c.mu.Lock()
	steps := append([]*cleanupStep(nil), c.steps...)
	c.mu.Unlock()
	for i := len(steps) - 1; i >= 0; i-- {
		steps[i].once.Do(steps[i].fn)
	}
}

// isMounted reports whether path is a mountpoint in this mount namespace.
func isMounted(path string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescapeMountinfo(f[4]) == path {
			return true
		}
	}
	return false
}

// unescapeMountinfo undoes the octal escapes (\040 for space) of mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// waitMounted waits until path is a live mount served by p.
func waitMounted(ctx context.Context, p *proc, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if isMounted(path) {
			// A stat goes through the FUSE server: it answers only once the
			// server has finished its INIT handshake.
			if _, err := os.Stat(path); err == nil {
				return nil
			}
		}
		if p.exited() {
			return fmt.Errorf("%s exited before the mount was live (%v); see its log", p.name, p.err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: mount %s not live after %s", p.name, path, timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// fuseUnmount releases a FUSE mount; lazily if it is busy or its server hangs.
func fuseUnmount(path string) error {
	if !isMounted(path) {
		return nil
	}
	if err := exec.Command("fusermount3", "-u", path).Run(); err == nil {
		return nil
	}
	if out, err := exec.Command("fusermount3", "-uz", path).CombinedOutput(); err != nil {
		return fmt.Errorf("fusermount3 -uz %s: %v: %s", path, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// dropCaches empties the page cache so that a read after a write measures
// the filesystem, not memory. It needs root; without it the remount between
// write and read still drops the mount's own caches.
func dropCaches() error {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200)
}
