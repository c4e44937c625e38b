package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"

	"github.com/cosmount/cosmount/internal/testproc"
)

// startProc starts a child in its own process group, so that a Ctrl-C at the
// terminal reaches only the benchmark, which then stops its children in order
// (a FUSE server killed before its mount is released leaves a dead mount).
func startProc(name, logPath string, env []string, argv ...string) (*testproc.Process, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return testproc.Start(name, logPath, 0o600, cmd)
}

// peakRSSMiB returns VmHWM, the process's peak resident set size so far.
func peakRSSMiB(pid int) (float64, error) {
	kib, err := testproc.PeakRSSKiB(pid)
	return float64(kib) / 1024, err
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

// fuseUnmount releases a FUSE mount; lazily if it is busy or its server hangs.
func fuseUnmount(path string) error {
	if !testproc.IsMounted(path, "") {
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
