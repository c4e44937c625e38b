package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cosmount/cosmount/internal/testproc"
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
// or s3fs in the foreground. Its output goes to a log file next to dir.
type server struct {
	dir string // mountpoint
	*testproc.Process
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
	dir := newMountpoint(t)
	full := append([]string{"mount", "--foreground"}, args...)
	cmd := exec.Command(cosmountBin, append(full, dir)...)
	cmd.Env = childEnv()
	return launch(t, dir, cmd, "fuse.cosmount")
}

// launch starts cmd, the FUSE server of dir, and waits until dir is mounted
// with fstype or the process exits. The process is stopped and the mount
// removed in t.Cleanup, even on failure.
func launch(t *testing.T, dir string, cmd *exec.Cmd, fstype string) (*server, error) {
	t.Helper()
	p, err := testproc.Start(filepath.Base(cmd.Path), filepath.Join(filepath.Dir(dir), "server.log"), 0o600, cmd)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{dir: dir, Process: p}
	t.Cleanup(func() { s.cleanup(t) })
	if err := testproc.WaitMounted(context.Background(), p, dir, fstype, false, mountTimeout); err != nil {
		return s, fmt.Errorf("%w:\n%s", err, s.log())
	}
	return s, nil
}

// newMountpoint makes an empty mountpoint in a new temporary directory, which
// also holds the server's log.
func newMountpoint(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// path joins names below the mountpoint.
func (s *server) path(names ...string) string {
	return filepath.Join(append([]string{s.dir}, names...)...)
}

// log is the process's output. cosmount never logs secrets, and s3fs runs
// with dbglevel=err, which logs no request headers, so it is safe to print.
func (s *server) log() string {
	b, _ := os.ReadFile(s.LogPath)
	return string(b)
}

// peakRSS is the process's peak resident set size (VmHWM) in bytes; the
// process must still be running.
func (s *server) peakRSS(t *testing.T) int64 {
	t.Helper()
	kib, err := testproc.PeakRSSKiB(s.PID())
	if err != nil {
		t.Fatalf("peak RSS of cosmount (pid %d): %v", s.PID(), err)
	}
	return kib << 10
}

// terminate sends SIGTERM (flush, then unmount) and waits for the process to
// end; it returns the process's exit error.
func (s *server) terminate(t *testing.T) error {
	t.Helper()
	killed, err := s.Stop(stopTimeout)
	if err != nil {
		t.Error(err)
	}
	if killed {
		t.Errorf("cosmount (pid %d) still running %v after SIGTERM; killed it\n%s", s.PID(), stopTimeout, s.log())
	}
	return s.Err()
}

// cleanup stops the process if it still runs and makes sure nothing stays
// mounted, so that a failed test leaves no hung mount behind.
func (s *server) cleanup(t *testing.T) {
	if err := s.terminate(t); err != nil && !t.Failed() {
		t.Logf("cosmount (pid %d) exited with %v", s.PID(), err)
	}
	if testproc.IsMounted(s.dir, "") {
		t.Errorf("%s still mounted after cosmount exited; detaching it", s.dir)
		if out, err := exec.Command("fusermount3", "-uz", s.dir).CombinedOutput(); err != nil {
			t.Logf("fusermount3 -uz %s: %v %s", s.dir, err, out)
		}
	}
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
	for testproc.Running(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}
