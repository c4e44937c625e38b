package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cosmount/cosmount/internal/testproc"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

// TestMountErrors: each common set-up mistake makes `cosmount mount` exit
// non-zero with a message that names the problem, and nothing is mounted.
func TestMountErrors(t *testing.T) {
	requireFUSE(t)
	env := emulatortest.Start(t)
	missing := filepath.Join(t.TempDir(), "no-such-dir")
	outsider := env.WritePodToken(t, t.TempDir(), "intruders", "default", "e2e-pod", time.Hour)
	auth := writerArgs(t, env)

	cases := []struct {
		name string
		// args precede the mountpoint; mountpoint "" means a fresh directory.
		args       []string
		mountpoint string
		detached   bool
		want       []string
	}{
		{
			name: "missing mountpoint", args: slices.Concat(auth, []string{env.Bucket}), mountpoint: missing,
			want: []string{missing, "does not exist"},
		},
		{
			name: "nonexistent bucket", args: slices.Concat(auth, []string{"no-such-bucket"}),
			want: []string{`"no-such-bucket"`, "does not exist"},
		},
		{
			name: "nonexistent bucket, detached", args: slices.Concat(auth, []string{"no-such-bucket"}), detached: true,
			want: []string{`"no-such-bucket"`, "does not exist"},
		},
		{
			name: "profile refuses the pod",
			args: []string{
				"--endpoint", env.COSURL, "--iam-endpoint", env.IAMURL,
				"--trusted-profile-id", emulatortest.WriterProfileID, "--cr-token-file", outsider, env.Bucket,
			},
			want: []string{"BXNIM0398E", "trusted profile"},
		},
		{
			name: "unknown -o option", args: slices.Concat(auth, []string{"-o", "colour=blue", env.Bucket}),
			want: []string{`"colour"`},
		},
		{
			name: "invalid -o value", args: slices.Concat(auth, []string{"-o", "part_size=1KiB", env.Bucket}),
			want: []string{"part_size"},
		},
		{
			name: "no credentials", args: []string{"--endpoint", env.COSURL, env.Bucket},
			want: []string{"no credentials"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mnt := c.mountpoint
			if mnt == "" {
				mnt = t.TempDir()
			}
			args := append([]string{"mount"}, c.args...)
			if !c.detached {
				args = append([]string{"mount", "--foreground"}, c.args...)
			}
			code, stderr := runCosmount(t, append(args, mnt)...)
			if code == 0 {
				t.Fatalf("cosmount %s exited 0, want an error; stderr:\n%s", strings.Join(args, " "), stderr)
			}
			t.Logf("stderr: %s", strings.TrimSpace(stderr))
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, stderr)
				}
			}
			if testproc.IsMounted(mnt, "") {
				t.Errorf("%s is mounted although cosmount failed", mnt)
			}
		})
	}
}

// runCosmount runs the binary to completion and returns its exit code and
// stderr. Should it mount although a failure was expected, the mount is
// removed (which ends the server) in t.Cleanup.
func runCosmount(t *testing.T, args ...string) (int, string) {
	t.Helper()
	// A file, not a pipe: a detached server inherits stderr, and a pipe
	// would keep Wait waiting for as long as that server lives.
	errFile, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cosmountBin, args...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = errFile, errFile
	if mnt := args[len(args)-1]; args[0] == "mount" {
		t.Cleanup(func() { unmountIfMounted(t, mnt) })
	}
	err = cmd.Run()
	out, _ := os.ReadFile(errFile.Name())
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	}
	t.Fatalf("running cosmount: %v", err)
	return 0, ""
}

// unmountIfMounted unmounts dir if something is still mounted there; a
// cosmount server ends by itself once its mount is gone.
func unmountIfMounted(t *testing.T, dir string) {
	if !testproc.IsMounted(dir, "") {
		return
	}
	if out, err := exec.Command("fusermount3", "-u", dir).CombinedOutput(); err != nil {
		t.Logf("fusermount3 -u %s: %v %s; detaching lazily", dir, err, out)
		_ = exec.Command("fusermount3", "-uz", dir).Run()
	}
}

// TestDetachedMountAndUnmount: without --foreground, `cosmount mount`
// returns only once the mount is live, leaving a server in the background;
// `cosmount unmount` ends that server.
func TestDetachedMountAndUnmount(t *testing.T) {
	requireFUSE(t)
	env := emulatortest.Start(t)
	b := newAPI(t, env)
	b.put("hello.txt", []byte("hello from the bucket\n"))
	mnt := t.TempDir()

	args := append([]string{"mount"}, writerArgs(t, env)...)
	args = append(args, "-o", "temp_dir="+t.TempDir(), env.Bucket, mnt)
	code, stderr := runCosmount(t, args...)
	if code != 0 {
		t.Fatalf("detached cosmount mount exited %d:\n%s", code, stderr)
	}
	// No waiting here: the command's return is the promise.
	if !testproc.IsMounted(mnt, "fuse.cosmount") {
		t.Fatalf("cosmount mount returned but %s is not mounted:\n%s", mnt, stderr)
	}
	pid := findServer(t, mnt)
	t.Cleanup(func() {
		// Only if the test failed before unmount ended the server we started.
		if pid > 0 && !waitGone(pid, 0) && serverOf(pid) == mnt {
			t.Errorf("background server (pid %d) still running; killing it", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if got, err := os.ReadFile(filepath.Join(mnt, "hello.txt")); err != nil || string(got) != "hello from the bucket\n" {
		t.Errorf("read through the detached mount: %q, %v", got, err)
	}

	code, stderr = runCosmount(t, "unmount", mnt)
	if code != 0 {
		t.Fatalf("cosmount unmount exited %d:\n%s", code, stderr)
	}
	if testproc.IsMounted(mnt, "") {
		t.Errorf("%s still mounted after cosmount unmount", mnt)
	}
	if !waitGone(pid, stopTimeout) {
		t.Errorf("background server (pid %d) still running %v after cosmount unmount", pid, stopTimeout)
	}
	code, stderr = runCosmount(t, "unmount", mnt)
	if code == 0 || !strings.Contains(stderr, "not a mountpoint") {
		t.Errorf("second cosmount unmount: exit %d, stderr %q; want an error saying it is not a mountpoint", code, stderr)
	}
}

// findServer returns the pid of the cosmount server process of mountpoint.
func findServer(t *testing.T, mountpoint string) int {
	t.Helper()
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err == nil && serverOf(pid) == mountpoint {
			return pid
		}
	}
	t.Fatalf("no cosmount process serves %s", mountpoint)
	return 0
}

// serverOf returns the mountpoint process pid serves if it is a cosmount
// server started by this test run, or "".
func serverOf(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	if len(args) < 4 || args[0] != cosmountBin || args[1] != "mount" || args[2] != "--foreground" {
		return ""
	}
	return args[len(args)-1]
}

// TestSIGTERMWithOpenFile: SIGTERM to a foreground server while a file is
// open for writing uploads what was written, and the mount is gone.
func TestSIGTERMWithOpenFile(t *testing.T) {
	env := emulatortest.Start(t)
	b := newAPI(t, env)
	m := mountWriter(t, env)

	first := []byte("flushed with fsync\n")
	second := []byte("written, not yet flushed\n")
	f, err := os.Create(m.path("open.txt"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.Write(first); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	b.wantObject("open.txt", first)
	if _, err := f.Write(second); err != nil {
		t.Fatal(err)
	}

	if err := m.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(stopTimeout)
	for testproc.IsMounted(m.dir, "") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if testproc.IsMounted(m.dir, "") {
		t.Fatalf("%s still mounted %v after SIGTERM:\n%s", m.dir, stopTimeout, m.log())
	}
	// The server flushed before giving up the mount: the unflushed write
	// is in the bucket too.
	b.wantObject("open.txt", append(bytes.Clone(first), second...))

	// The open file kept the detached connection alive; closing it lets the
	// server finish.
	cerr := f.Close()
	select {
	case <-m.Done():
		t.Logf("close after SIGTERM: %v; server exit: %v", cerr, m.Err())
	case <-time.After(stopTimeout):
		t.Errorf("server (pid %d) still running %v after SIGTERM and the last close:\n%s", m.PID(), stopTimeout, m.log())
	}
	if !strings.Contains(m.log(), "flushing") {
		t.Errorf("the server log does not say it flushed on SIGTERM:\n%s", m.log())
	}
}
