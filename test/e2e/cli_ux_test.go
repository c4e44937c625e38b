package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cosmount/cosmount/internal/testproc"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

// TestFlagsAfterPositionals: the same mount written the way s3fs users
// type it (bucket and mountpoint first, then -o and flags, -f for the
// foreground) and entirely as -o options (mount(8)'s form) serves the same
// bucket with the same options as the flags-first form.
func TestFlagsAfterPositionals(t *testing.T) {
	requireFUSE(t)
	env := emulatortest.Start(t)
	b := newAPI(t, env)
	b.put("team/hello.txt", []byte("hello\n"))
	token := env.WritePodToken(t, t.TempDir(), "default", "default", "e2e-pod", time.Hour)
	source := env.Bucket + ":/team"
	forms := map[string]func(mnt string) []string{
		"flags first": func(mnt string) []string {
			return []string{"mount", "--foreground", "--endpoint", env.COSURL, "--iam-endpoint", env.IAMURL,
				"--trusted-profile-id", emulatortest.WriterProfileID, "--cr-token-file", token,
				"-o", "uid=4321,file_mode=0640,temp_dir=" + t.TempDir(), source, mnt}
		},
		"flags after the positionals": func(mnt string) []string {
			return []string{"mount", source, mnt, "-o", "uid=4321,file_mode=0640", "-f", "-d",
				"--endpoint", env.COSURL, "--iam-endpoint=" + env.IAMURL, "-o", "temp_dir=" + t.TempDir(),
				"--cr-token-file", token, "--trusted-profile-id", emulatortest.WriterProfileID}
		},
		"everything in -o": func(mnt string) []string {
			return []string{"mount", source, mnt, "-o", strings.Join([]string{
				"endpoint=" + env.COSURL, "iam_endpoint=" + env.IAMURL, "trusted_profile_id=" + emulatortest.WriterProfileID,
				"cr_token_file=" + token, "foreground", "uid=4321", "file_mode=0640", "temp_dir=" + t.TempDir(), "_netdev", "nofail",
			}, ",")}
		},
	}
	for name, args := range forms {
		t.Run(name, func(t *testing.T) {
			mnt := newMountpoint(t)
			cmd := exec.Command(cosmountBin, args(mnt)...)
			cmd.Env = childEnv()
			s, err := launch(t, mnt, cmd, "fuse.cosmount")
			if err != nil {
				t.Fatal(err)
			}
			var st syscall.Stat_t
			if err := syscall.Stat(s.path("hello.txt"), &st); err != nil {
				t.Fatalf("stat through the mount: %v\n%s", err, s.log())
			}
			if st.Uid != 4321 || st.Mode&0o777 != 0o640 {
				t.Errorf("hello.txt: uid %d mode %o, want 4321 and 0640", st.Uid, st.Mode&0o777)
			}
			if got, err := os.ReadFile(s.path("hello.txt")); err != nil || string(got) != "hello\n" {
				t.Errorf("read %q, %v", got, err)
			}
			if err := s.terminate(t); err != nil {
				t.Errorf("server exit: %v\n%s", err, s.log())
			}
		})
	}
}

// TestVersionOnEverySubcommand: --version answers the same on the command,
// each subcommand (also after other arguments) and the mount helper.
func TestVersionOnEverySubcommand(t *testing.T) {
	want := ""
	for _, args := range [][]string{
		{"version"}, {"--version"}, {"mount", "--version"}, {"mount", "bucket", "/mnt", "--version"},
		{"unmount", "--version"}, {"umount", "/mnt", "--version"}, {"version", "--version"},
	} {
		out, err := exec.Command(cosmountBin, args...).CombinedOutput()
		if err != nil {
			t.Errorf("cosmount %s: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		got := strings.TrimSpace(string(out))
		if !strings.HasPrefix(got, "cosmount/") || strings.Contains(got, "\n") {
			t.Errorf("cosmount %s printed %q, want one line cosmount/VERSION", strings.Join(args, " "), got)
		}
		if want == "" {
			want = got
		} else if got != want {
			t.Errorf("cosmount %s printed %q, cosmount version %q", strings.Join(args, " "), got, want)
		}
	}
	helper := filepath.Join(t.TempDir(), "mount.fuse.cosmount")
	if err := os.Symlink(cosmountBin, helper); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(helper, "--version").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != want {
		t.Errorf("mount.fuse.cosmount --version: %q, %v", out, err)
	}
}

// TestLogFileOfADetachedMount: a detached mount's log goes to --log-file,
// not to the terminal that started it, from start to stop.
func TestLogFileOfADetachedMount(t *testing.T) {
	requireFUSE(t)
	env := emulatortest.Start(t)
	mnt := t.TempDir()
	logFile := filepath.Join(t.TempDir(), "cosmount.log")
	args := append([]string{"mount", env.Bucket, mnt, "--log-file", logFile, "-o", "temp_dir=" + t.TempDir()}, writerArgs(t, env)...)
	code, stderr := runCosmount(t, args...)
	if code != 0 {
		t.Fatalf("detached mount with --log-file exited %d:\n%s", code, stderr)
	}
	pid := findServer(t, mnt)
	t.Cleanup(func() {
		if !waitGone(pid, 0) && serverOf(pid) == mnt {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if err := os.WriteFile(filepath.Join(mnt, "logged.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := runCosmount(t, "unmount", mnt); code != 0 {
		t.Fatalf("unmount: %s", out)
	}
	if !waitGone(pid, stopTimeout) {
		t.Fatalf("server %d still running after unmount", pid)
	}
	data, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	log := string(data)
	for _, want := range []string{`"cosmount serving"`, "mountpoint=\"" + mnt + "\""} {
		if !strings.Contains(log, want) {
			t.Errorf("the log file lacks %s:\n%s", want, log)
		}
	}
	if strings.Contains(stderr, "cosmount serving") {
		t.Errorf("the detached server logged to the terminal:\n%s", stderr)
	}
	if st, err := os.Stat(logFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("log file mode: %v %v", st.Mode(), err)
	}
}

// helperPath is where mount(8) looks for the helper of type fuse.cosmount.
const helperPath = "/sbin/mount.fuse.cosmount"

// installHelper links the helper to the binary under test for the test's
// duration. mount(8) finds helpers only in /sbin (it resets PATH), so the
// test needs that path; it refuses to replace a helper it did not make.
func installHelper(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mount(8) with a helper needs root")
	}
	if _, err := exec.LookPath("mount"); err != nil {
		t.Skip("no mount(8)")
	}
	if target, err := os.Readlink(helperPath); err == nil {
		if _, err := os.Stat(target); err == nil {
			t.Skipf("%s already exists (-> %s); not replacing an installed helper", helperPath, target)
		}
		// A link left by an interrupted run of this test: its binary is gone.
		os.Remove(helperPath)
	} else if _, err := os.Lstat(helperPath); err == nil {
		t.Skipf("%s already exists; not replacing an installed helper", helperPath)
	}
	if err := os.Symlink(cosmountBin, helperPath); err != nil {
		t.Fatalf("installing the mount helper: %v", err)
	}
	t.Cleanup(func() {
		if target, _ := os.Readlink(helperPath); target == cosmountBin {
			os.Remove(helperPath)
		}
	})
}

// runMount8 runs mount(8) (or umount(8)) with args and returns its exit code
// and output. Output goes to a file: a detached server inherits it.
func runMount8(t *testing.T, name string, args ...string) (int, string) {
	t.Helper()
	outFile, err := os.Create(filepath.Join(t.TempDir(), name+".out"))
	if err != nil {
		t.Fatal(err)
	}
	defer outFile.Close()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = outFile, outFile
	err = cmd.Run()
	out, _ := os.ReadFile(outFile.Name())
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	}
	t.Fatalf("%s %q: %v", name, args, err)
	return 0, ""
}

// stopServerOf unmounts mnt if it is mounted and waits until the server
// serving it ends; it kills the server if it does not.
func stopServerOf(t *testing.T, mnt string, pid int) {
	unmountIfMounted(t, mnt)
	if pid > 0 && !waitGone(pid, stopTimeout) && serverOf(pid) == mnt {
		t.Errorf("server %d of %s still running after unmount; killing it", pid, mnt)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// TestMountHelper: `mount -t fuse.cosmount BUCKET:/PREFIX DIR -o ...` and
// fstab lines through `mount -a -T FILE` mount like `cosmount mount`, with
// every setting given as an -o option and mount(8)'s own options
// (_netdev, nofail, noauto) accepted. A failing nofail entry does not
// keep the others from being mounted, a noauto entry is left alone, a
// second `mount -a` does not mount anything twice, and umount(8) ends the
// servers.
func TestMountHelper(t *testing.T) {
	requireFUSE(t)
	installHelper(t)
	env := emulatortest.Start(t)
	b := newAPI(t, env)
	b.put("team/hello.txt", []byte("hello from the bucket\n"))
	token := env.WritePodToken(t, t.TempDir(), "default", "default", "e2e-pod", time.Hour)
	logDir := t.TempDir()
	opts := func(extra ...string) string {
		return strings.Join(append([]string{
			"endpoint=" + env.COSURL, "iam_endpoint=" + env.IAMURL,
			"trusted_profile_id=" + emulatortest.WriterProfileID, "cr_token_file=" + token,
			"temp_dir=" + t.TempDir(),
		}, extra...), ",")
	}

	// mount -t, then umount.
	mnt := newMountpoint(t)
	code, out := runMount8(t, "mount", "-t", "fuse.cosmount", env.Bucket+":/team", mnt,
		"-o", opts("uid=1234", "_netdev", "log_file="+filepath.Join(logDir, "t.log")))
	if code != 0 {
		t.Fatalf("mount -t fuse.cosmount exited %d:\n%s", code, out)
	}
	pid := findServer(t, mnt)
	t.Cleanup(func() { stopServerOf(t, mnt, pid) })
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(mnt, "hello.txt"), &st); err != nil || st.Uid != 1234 {
		t.Errorf("hello.txt through mount -t: uid %d, %v", st.Uid, err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "via-mount.txt"), []byte("written through mount -t\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b.wantObject("team/via-mount.txt", []byte("written through mount -t\n"))
	if code, out := runMount8(t, "umount", mnt); code != 0 {
		t.Fatalf("umount %s exited %d:\n%s", mnt, code, out)
	}
	if !waitGone(pid, stopTimeout) {
		t.Errorf("server %d still running after umount", pid)
	}
	if log, _ := os.ReadFile(filepath.Join(logDir, "t.log")); !strings.Contains(string(log), "cosmount serving") {
		t.Errorf("log_file= of mount -t holds no serving line:\n%s", log)
	}

	// An fstab: a bucket that does not exist (nofail), then the good line,
	// then a noauto line.
	good, missing, manual := newMountpoint(t), newMountpoint(t), newMountpoint(t)
	fstab := filepath.Join(t.TempDir(), "fstab")
	lines := fmt.Sprintf("# cosmount test fstab\n"+
		"no-such-bucket %s fuse.cosmount %s 0 0\n"+
		"%s:/team %s fuse.cosmount %s 0 0\n"+
		"%s %s fuse.cosmount %s 0 0\n",
		missing, opts("_netdev", "nofail"),
		env.Bucket, good, opts("_netdev", "nofail", "allow_other", "log_file="+filepath.Join(logDir, "fstab.log")),
		env.Bucket, manual, opts("noauto", "_netdev"))
	if err := os.WriteFile(fstab, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out = runMount8(t, "mount", "-a", "-T", fstab)
	t.Logf("mount -a -T: exit %d\n%s", code, out)
	if !testproc.IsMounted(good, "fuse.cosmount") {
		t.Fatalf("the good fstab line is not mounted (mount -a exit %d):\n%s", code, out)
	}
	goodPID := findServer(t, good)
	t.Cleanup(func() { stopServerOf(t, good, goodPID) })
	if testproc.IsMounted(missing, "") || testproc.IsMounted(manual, "") {
		t.Errorf("mounted: missing bucket %v, noauto line %v", testproc.IsMounted(missing, ""), testproc.IsMounted(manual, ""))
	}
	if !strings.Contains(out, "no-such-bucket") {
		t.Errorf("mount -a does not say which line failed:\n%s", out)
	}
	if got, err := os.ReadFile(filepath.Join(good, "hello.txt")); err != nil || string(got) != "hello from the bucket\n" {
		t.Errorf("read through the fstab mount: %q %v", got, err)
	}
	// mount -a again: what is mounted stays as it is, nothing is stacked.
	runMount8(t, "mount", "-a", "-T", fstab)
	if n := mountsAt(t, good); n != 1 {
		t.Errorf("%s is mounted %d times after a second mount -a", good, n)
	}
	if code, out := runMount8(t, "umount", good); code != 0 {
		t.Fatalf("umount %s exited %d:\n%s", good, code, out)
	}
	if !waitGone(goodPID, stopTimeout) {
		t.Errorf("server %d still running after umount", goodPID)
	}
	// The noauto line mounts when asked for by its mountpoint.
	code, out = runMount8(t, "mount", "-T", fstab, manual)
	if code != 0 {
		t.Fatalf("mount -T fstab %s exited %d:\n%s", manual, code, out)
	}
	manualPID := findServer(t, manual)
	t.Cleanup(func() { stopServerOf(t, manual, manualPID) })
	if _, err := os.Stat(filepath.Join(manual, "team", "hello.txt")); err != nil {
		t.Errorf("the noauto line's mount: %v", err)
	}
	if code, out := runMount8(t, "umount", manual); code != 0 {
		t.Errorf("umount %s: %d %s", manual, code, out)
	}
}

// mountsAt counts the mounts whose mountpoint is dir.
func mountsAt(t *testing.T, dir string) int {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && testproc.UnescapeMountinfo(f[4]) == dir {
			n++
		}
	}
	return n
}
