package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

// Generous limits: two cores are shared by several builds and test runs, so
// these bound hangs, they do not measure speed.
const (
	mountTimeout   = 90 * time.Second
	stopTimeout    = 2 * time.Minute
	commandTimeout = 5 * time.Minute
)

// cosmountBin is the binary under test, built once by TestMain.
var cosmountBin string

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "cosmount-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "cosmount")
	build := exec.Command(goTool(), "build", "-o", bin, "github.com/cosmount/cosmount/cmd/cosmount")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building cmd/cosmount:", err)
		return 1
	}
	cosmountBin = bin
	return m.Run()
}

// goTool finds the go command that runs this test: PATH first, then GOROOT.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if root := os.Getenv("GOROOT"); root != "" {
		return filepath.Join(root, "bin", "go")
	}
	return "go"
}

// requireFUSE skips when the machine cannot mount FUSE filesystems at all;
// CI installs fuse3, so this only skips on a developer machine without it.
func requireFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("/dev/fuse is missing (%v): FUSE mounts are impossible here", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("fusermount3 is not installed (apt-get install -y fuse3); CI installs it")
	}
}

// childEnv is the environment of cosmount children: the test's own, without
// COSMOUNT_* credentials a developer may have exported, which would make the
// child see two authentication methods.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "COSMOUNT_") {
			env = append(env, kv)
		}
	}
	return env
}

// server is one FUSE server child process: `cosmount mount --foreground`,
// or s3fs in the foreground.
type server struct {
	dir     string // mountpoint
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	waitErr error // valid once exited is closed
}

// writerArgs are the authentication flags of a pod of namespace "default",
// service account "default", which profile Profile-writer trusts.
func writerArgs(t *testing.T, env *emulatortest.Env) []string {
	t.Helper()
	token := env.WritePodToken(t, t.TempDir(), "default", "default", "e2e-pod", time.Hour)
	return []string{
		"--endpoint", env.COSURL, "--iam-endpoint", env.IAMURL,
		"--trusted-profile-id", emulatortest.WriterProfileID, "--cr-token-file", token,
	}
}

// mountWriter mounts the emulator's bucket as Profile-writer with the given
// -o options (temp_dir is added so temporary files die with the test) and
// fails the test if the mount does not come up.
func mountWriter(t *testing.T, env *emulatortest.Env, options ...string) *server {
	t.Helper()
	requireFUSE(t)
	options = append([]string{"temp_dir=" + t.TempDir()}, options...)
	args := append(writerArgs(t, env), "-o", strings.Join(options, ","), env.Bucket)
	s, err := startServer(t, args)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startServer runs `cosmount mount --foreground ARGS... MOUNTPOINT` on a new
// mountpoint and waits until the mount is live or the process exits.
func startServer(t *testing.T, args []string) (*server, error) {
	t.Helper()
	s, logFile := newServer(t)
	defer logFile.Close()
	full := append([]string{"mount", "--foreground"}, args...)
	s.cmd = exec.Command(cosmountBin, append(full, s.dir)...)
	s.cmd.Env = childEnv()
	return s, s.launch(t, logFile, "fuse.cosmount")
}

// launch starts s.cmd with its output in logFile and waits until s.dir is
// mounted with fstype or the process exits. The process is stopped and the
// mount removed in t.Cleanup, even on failure.
func (s *server) launch(t *testing.T, logFile *os.File, fstype string) error {
	t.Helper()
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", s.cmd.Path, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() { s.cleanup(t) })

	deadline := time.Now().Add(mountTimeout)
	for !isMounted(s.dir, fstype) {
		select {
		case <-s.exited:
			return fmt.Errorf("%s exited before mounting (%v):\n%s", filepath.Base(s.cmd.Path), s.waitErr, s.log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not mounted after %v:\n%s", s.dir, mountTimeout, s.log())
		}
	}
	return nil
}

// newServer prepares a mountpoint and a log file in a new temporary directory.
func newServer(t *testing.T) (*server, *os.File) {
	t.Helper()
	work := t.TempDir()
	s := &server{dir: filepath.Join(work, "mnt"), logPath: filepath.Join(work, "server.log"), exited: make(chan struct{})}
	if err := os.Mkdir(s.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(s.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return s, logFile
}

// path joins names below the mountpoint.
func (s *server) path(names ...string) string {
	return filepath.Join(append([]string{s.dir}, names...)...)
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// log is the process's output. cosmount never logs secrets, and s3fs runs
// with dbglevel=err, which logs no request headers, so it is safe to print.
func (s *server) log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// peakRSS is the process's peak resident set size (VmHWM) in bytes; the
// process must still be running.
func (s *server) peakRSS(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid()))
	if err != nil {
		t.Fatalf("reading the status of cosmount (pid %d): %v", s.pid(), err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM line %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", s.pid())
	return 0
}

// terminate sends SIGTERM (flush, then unmount) and waits for the process to
// end; it returns the process's exit error.
func (s *server) terminate(t *testing.T) error {
	t.Helper()
	select {
	case <-s.exited:
		return s.waitErr
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("SIGTERM to cosmount (pid %d): %v", s.pid(), err)
	}
	select {
	case <-s.exited:
		return s.waitErr
	case <-time.After(stopTimeout):
		t.Errorf("cosmount (pid %d) still running %v after SIGTERM; killing it\n%s", s.pid(), stopTimeout, s.log())
		_ = s.cmd.Process.Kill()
		<-s.exited
		return s.waitErr
	}
}

// cleanup stops the process if it still runs and makes sure nothing stays
// mounted, so that a failed test leaves no hung mount behind.
func (s *server) cleanup(t *testing.T) {
	if err := s.terminate(t); err != nil && !t.Failed() {
		t.Logf("cosmount (pid %d) exited with %v", s.pid(), err)
	}
	if isMounted(s.dir, "") {
		t.Errorf("%s still mounted after cosmount exited; detaching it", s.dir)
		if out, err := exec.Command("fusermount3", "-uz", s.dir).CombinedOutput(); err != nil {
			t.Logf("fusermount3 -uz %s: %v %s", s.dir, err, out)
		}
	}
}

// isMounted reports whether dir is a mountpoint, of fstype if that is set.
func isMounted(dir, fstype string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || unescapeMountinfo(f[4]) != dir {
			continue
		}
		if fstype == "" {
			return true
		}
		if _, after, ok := strings.Cut(line, " - "); ok && strings.HasPrefix(after, fstype+" ") {
			return true
		}
	}
	return false
}

// unescapeMountinfo undoes the octal escapes (\040 for a space, ...) the
// kernel uses for paths in mountinfo.
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

// shell runs script with sh in dir and fails the test if it exits non-zero.
func shell(t *testing.T, dir, script string) string {
	t.Helper()
	stdout, stderr, err := shellResult(dir, script)
	if err != nil {
		t.Fatalf("sh -c %q in %s: %v\nstderr: %s", script, dir, err, stderr)
	}
	return stdout
}

// shellResult runs script with sh in dir and returns its output and exit error.
func shellResult(dir, script string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	cmd.Dir = dir
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// waitGone waits until the process pid has ended (or become a zombie); with
// timeout 0 it looks once.
func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		// Field 3, after the parenthesised command name, is the state.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && len(b) > i+2 && b[i+2] == 'Z' {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}
