package mounter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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

	"golang.org/x/sys/unix"
)

// fakeBinary is the testdata/fakemount server, built once by TestMain.
var fakeBinary string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "mounter-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	fakeBinary = filepath.Join(dir, "fakemount")
	cmd := exec.Command("go", "build", "-o", fakeBinary, "./testdata/fakemount")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building fake cosmount: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// needFUSE skips tests that mount when this machine cannot.
func needFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("no fusermount3 (apt-get install fuse3)")
	}
}

func newTestMounter(t *testing.T, stateDir string) *Mounter {
	t.Helper()
	m, err := New(Options{StateDir: stateDir, Binary: fakeBinary, MountTimeout: 30 * time.Second, StopTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// testVolume returns a trusted-profile volume on a fresh target directory and
// registers a cleanup that removes any mount or server left by a failed test.
func testVolume(t *testing.T, m *Mounter, name string) Volume {
	t.Helper()
	target := filepath.Join(t.TempDir(), name)
	if err := os.Mkdir(target, 0o750); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Unmount(context.Background(), target); err != nil {
			t.Errorf("cleanup unmount: %v", err)
			unix.Unmount(target, unix.MNT_DETACH)
		}
	})
	return Volume{
		VolumeID:    "vol-" + name,
		Target:      target,
		Bucket:      "bucket",
		Prefix:      "team/a",
		Endpoint:    "http://127.0.0.1:1",
		Region:      "us-south",
		IAMEndpoint: "http://127.0.0.1:2",
		Auth:        AuthTrustedProfile,
		ProfileID:   "Profile-1",
		Options:     []string{"uid=1000", "allow_other"},
		Credentials: Credentials{CRToken: "pod-token-one"},
	}
}

func readMountFile(t *testing.T, target, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(target, name))
	if err != nil {
		t.Fatalf("read %s through the mount: %v", name, err)
	}
	return strings.TrimSpace(string(b))
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestMountUpdateUnmount(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	stateDir := filepath.Join(t.TempDir(), "state")
	m := newTestMounter(t, stateDir)
	v := testVolume(t, m, "t1")

	if err := m.Mount(ctx, v); err != nil {
		t.Fatalf("Mount: %v", err)
	}
	st, err := m.Status(v.Target)
	if err != nil || st.State != Healthy || st.Record == nil {
		t.Fatalf("Status after mount = %+v, %v; want healthy with a record", st, err)
	}
	rec := st.Record
	if rec.VolumeID != v.VolumeID || rec.Target != v.Target || rec.Auth != AuthTrustedProfile {
		t.Errorf("record = %+v", rec)
	}
	pid := readMountFile(t, v.Target, "pid")
	if pid != strconv.Itoa(rec.PID) {
		t.Errorf("server pid %s, record pid %d", pid, rec.PID)
	}
	if got := readMountFile(t, v.Target, "source"); got != "bucket:/team/a" {
		t.Errorf("source = %q", got)
	}
	wantSock := filepath.Join(m.volumeDir(v.Target), metricsSocketFile)
	if rec.MetricsSocket != wantSock {
		t.Errorf("record metrics socket = %q, want %q", rec.MetricsSocket, wantSock)
	}
	if got := readMountFile(t, v.Target, "metrics"); got != wantSock {
		t.Errorf("server got --metrics-socket %q, want %q", got, wantSock)
	}
	if got := readMountFile(t, v.Target, "env"); got != "PATH" {
		t.Errorf("server environment = %q, want only PATH", got)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", rec.PID))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(cmdline), "pod-token-one") {
		t.Error("the token is on the server's command line")
	}
	dir := m.volumeDir(v.Target)
	for path, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, filepath.Join(dir, "token"): 0o600, filepath.Join(dir, recordFile): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s mode %v, want %v", path, fi.Mode(), want)
		}
	}
	if got := readMountFile(t, v.Target, "credsum"); got != sum("pod-token-one") {
		t.Errorf("server sees credential %s, want the first token", got)
	}
	if !m.Compatible(v, rec) {
		t.Error("the same volume is not compatible with its own record")
	}
	ro := v
	ro.Options = append([]string{"ro"}, v.Options...)
	if m.Compatible(ro, rec) {
		t.Error("a read-only publish is compatible with a read-write one")
	}

	// Republish: only the credential file changes; the same process serves it.
	same, err := m.SameCredentials(v.Target, Credentials{CRToken: "pod-token-one"})
	if err != nil || !same {
		t.Errorf("SameCredentials(first token) = %v, %v", same, err)
	}
	same, err = m.SameCredentials(v.Target, Credentials{CRToken: "pod-token-two"})
	if err != nil || same {
		t.Errorf("SameCredentials(second token) = %v, %v", same, err)
	}
	if err := m.UpdateCredentials(v.Target, Credentials{CRToken: "pod-token-two"}); err != nil {
		t.Fatalf("UpdateCredentials: %v", err)
	}
	if got := readMountFile(t, v.Target, "credsum"); got != sum("pod-token-two") {
		t.Errorf("server sees credential %s after the update, want the second token", got)
	}
	if got := readMountFile(t, v.Target, "pid"); got != pid {
		t.Errorf("server pid changed from %s to %s on a credential update", pid, got)
	}
	if err := m.UpdateCredentials(v.Target, Credentials{}); err == nil {
		t.Error("UpdateCredentials accepted an empty token")
	}

	if err := m.Mount(ctx, v); !errors.Is(err, ErrTargetBusy) {
		t.Errorf("second Mount = %v, want ErrTargetBusy", err)
	}

	if err := m.Unmount(ctx, v.Target); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	assertGone(t, m, v.Target, rec)
	if err := m.Unmount(ctx, v.Target); err != nil {
		t.Errorf("second Unmount = %v, want success", err)
	}
	if err := m.UpdateCredentials(v.Target, Credentials{CRToken: "x"}); !errors.Is(err, ErrNotPublished) {
		t.Errorf("UpdateCredentials after unmount = %v, want ErrNotPublished", err)
	}
}

// assertGone checks that nothing of a volume is left: mount, process, state.
func assertGone(t *testing.T, m *Mounter, target string, rec *Record) {
	t.Helper()
	st, err := m.Status(target)
	if err != nil || st.State != NotMounted || st.Record != nil {
		t.Errorf("Status = %+v, %v; want not mounted, no record", st, err)
	}
	if rec != nil && procAlive(rec.PID, rec.ProcStart) {
		t.Errorf("server %d still runs", rec.PID)
	}
	if _, err := os.Stat(m.volumeDir(target)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state directory still there: %v", err)
	}
}

func TestMountFailuresLeaveNothing(t *testing.T) {
	needFUSE(t)
	tests := []struct {
		name    string
		option  string
		timeout time.Duration
		want    string
	}{
		{name: "server exits", option: "fake_fail", timeout: 30 * time.Second, want: "failing as asked"},
		{name: "never mounts", option: "fake_nomount", timeout: 2 * time.Second, want: "timed out"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(Options{StateDir: filepath.Join(t.TempDir(), "state"), Binary: fakeBinary, MountTimeout: tc.timeout, StopTimeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			v := testVolume(t, m, "f")
			v.Options = append(v.Options, tc.option)
			err = m.Mount(context.Background(), v)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Mount = %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "pod-token-one") {
				t.Error("the error contains the token")
			}
			assertGone(t, m, v.Target, nil)
			if out, _ := exec.Command("pgrep", "-f", v.Target).Output(); len(out) > 0 {
				t.Errorf("a server for %s still runs: pids %s", v.Target, out)
			}
		})
	}
}

func TestDeadMountIsCleanedUp(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	m := newTestMounter(t, filepath.Join(t.TempDir(), "state"))
	v := testVolume(t, m, "dead")
	if err := m.Mount(ctx, v); err != nil {
		t.Fatal(err)
	}
	st, _ := m.Status(v.Target)
	rec := st.Record
	if err := syscall.Kill(rec.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !waitGone(ctx, rec.PID, rec.ProcStart, 20*time.Second) {
		t.Fatal("killed server did not exit")
	}
	st, err := m.Status(v.Target)
	if err != nil || st.State != Dead {
		t.Fatalf("Status after the server crashed = %v, %v; want dead", st.State, err)
	}
	if _, err := os.ReadDir(v.Target); !isDeadMountErr(err) {
		t.Errorf("reading a dead mount = %v, want ENOTCONN", err)
	}
	if err := m.Unmount(ctx, v.Target); err != nil {
		t.Fatalf("Unmount of a dead mount: %v", err)
	}
	assertGone(t, m, v.Target, rec)
}

func TestRecoverAfterPluginRestart(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	stateDir := filepath.Join(t.TempDir(), "state")
	before := newTestMounter(t, stateDir)
	alive := testVolume(t, before, "alive")
	crashed := testVolume(t, before, "crashed")
	for _, v := range []Volume{alive, crashed} {
		if err := before.Mount(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	stAlive, _ := before.Status(alive.Target)
	stCrashed, _ := before.Status(crashed.Target)
	syscall.Kill(stCrashed.Record.PID, syscall.SIGKILL)
	waitGone(ctx, stCrashed.Record.PID, stCrashed.Record.ProcStart, 20*time.Second)

	// A new Mounter over the same state directory is what a restarted plugin has.
	after := newTestMounter(t, stateDir)
	adopted, err := after.Recover(ctx)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if len(adopted) != 1 || adopted[0].Target != alive.Target || adopted[0].PID != stAlive.Record.PID {
		t.Fatalf("adopted %+v, want only %s", adopted, alive.Target)
	}
	assertGone(t, after, crashed.Target, stCrashed.Record)
	if got := readMountFile(t, alive.Target, "pid"); got != strconv.Itoa(stAlive.Record.PID) {
		t.Errorf("adopted server pid %s", got)
	}
	if err := after.UpdateCredentials(alive.Target, Credentials{CRToken: "renewed"}); err != nil {
		t.Fatal(err)
	}
	if got := readMountFile(t, alive.Target, "credsum"); got != sum("renewed") {
		t.Error("adopted server does not see the renewed token")
	}
	if err := after.Unmount(ctx, alive.Target); err != nil {
		t.Fatalf("Unmount after restart: %v", err)
	}
	assertGone(t, after, alive.Target, stAlive.Record)
}

func TestArgs(t *testing.T) {
	base := Volume{Target: "/t", Bucket: "b", Endpoint: "http://e", IAMEndpoint: "http://i"}
	tests := []struct {
		name   string
		modify func(*Volume)
		want   string
	}{
		{"profile id", func(v *Volume) { v.Auth, v.ProfileID = AuthTrustedProfile, "P-1" },
			"mount --foreground --endpoint http://e --iam-endpoint http://i --trusted-profile-id P-1 --cr-token-file /s/token b /t"},
		{"profile name with region and prefix", func(v *Volume) {
			v.Auth, v.ProfileName, v.Region, v.Prefix = AuthTrustedProfile, "writer", "us-south", "/a/b/"
		}, "mount --foreground --endpoint http://e --region us-south --iam-endpoint http://i --trusted-profile-name writer --cr-token-file /s/token b:/a/b /t"},
		{"profile crn with options", func(v *Volume) {
			v.Auth, v.ProfileCRN, v.Options = AuthTrustedProfile, "crn:v1:x", []string{"ro", "uid=1"}
		}, "mount --foreground --endpoint http://e --iam-endpoint http://i --trusted-profile-crn crn:v1:x --cr-token-file /s/token -o ro,uid=1 b /t"},
		{"api key", func(v *Volume) { v.Auth = AuthAPIKey },
			"mount --foreground --endpoint http://e --iam-endpoint http://i --api-key-file /s/apikey b /t"},
		{"hmac has no IAM endpoint", func(v *Volume) { v.Auth = AuthHMAC },
			"mount --foreground --endpoint http://e --hmac-credentials-file /s/hmac b /t"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := base
			tc.modify(&v)
			got := strings.Join(v.Args("/s/"+credentialFileName(v.Auth)), " ")
			if got != tc.want {
				t.Errorf("args:\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestWithMetricsSocket(t *testing.T) {
	v := Volume{Target: "/t", Bucket: "b", Endpoint: "http://e", Auth: AuthHMAC}
	args := v.Args("/s/hmac")
	got := strings.Join(withMetricsSocket(args, "/s/metrics.sock"), " ")
	want := "mount --metrics-socket /s/metrics.sock --foreground --endpoint http://e --hmac-credentials-file /s/hmac b /t"
	if got != want {
		t.Errorf("args:\n got %s\nwant %s", got, want)
	}
	if strings.Join(args, " ") != "mount --foreground --endpoint http://e --hmac-credentials-file /s/hmac b /t" {
		t.Errorf("withMetricsSocket modified its input: %v", args)
	}
}

// A state directory too deep for a unix socket path must not stop the
// volume from mounting; it only goes without metrics.
func TestMetricsSocketPathTooLong(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	stateDir := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	m := newTestMounter(t, stateDir)
	v := testVolume(t, m, "long")
	if err := m.Mount(ctx, v); err != nil {
		t.Fatalf("Mount: %v", err)
	}
	st, err := m.Status(v.Target)
	if err != nil || st.State != Healthy || st.Record == nil {
		t.Fatalf("Status = %+v, %v; want healthy with a record", st, err)
	}
	if st.Record.MetricsSocket != "" {
		t.Errorf("record metrics socket = %q, want none for a path over %d bytes", st.Record.MetricsSocket, maxSocketPath)
	}
	if got := readMountFile(t, v.Target, "metrics"); got != "" {
		t.Errorf("server got --metrics-socket %q, want none", got)
	}
	if !m.Compatible(v, st.Record) {
		t.Error("the volume is not compatible with its own record")
	}
}

func TestValidate(t *testing.T) {
	good := Volume{Target: "/t", Bucket: "b", Endpoint: "http://e", IAMEndpoint: "http://i", Auth: AuthTrustedProfile, ProfileID: "P", Credentials: Credentials{CRToken: "t"}}
	tests := []struct {
		name   string
		modify func(*Volume)
		ok     bool
	}{
		{"good", func(v *Volume) {}, true},
		{"relative target", func(v *Volume) { v.Target = "t" }, false},
		{"no bucket", func(v *Volume) { v.Bucket = "" }, false},
		{"two profiles", func(v *Volume) { v.ProfileName = "n" }, false},
		{"no token", func(v *Volume) { v.Credentials.CRToken = " \n" }, false},
		{"comma in option", func(v *Volume) { v.Options = []string{"a,b"} }, false},
		{"hmac", func(v *Volume) {
			v.Auth, v.ProfileID, v.IAMEndpoint = AuthHMAC, "", ""
			v.Credentials = Credentials{AccessKeyID: "k", SecretAccessKey: "s"}
		}, true},
		{"hmac key with colon", func(v *Volume) {
			v.Auth = AuthHMAC
			v.Credentials = Credentials{AccessKeyID: "k:x", SecretAccessKey: "s"}
		}, false},
		{"api key without IAM", func(v *Volume) {
			v.Auth, v.IAMEndpoint, v.Credentials = AuthAPIKey, "", Credentials{APIKey: "k"}
		}, false},
		{"unknown auth", func(v *Volume) { v.Auth = "x" }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := good
			tc.modify(&v)
			if err := v.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	if s := fmt.Sprintf("%v %+v %#v", good.Credentials, good, good); strings.Contains(s, "t}") && strings.Contains(s, "CRToken") {
		t.Errorf("credentials are formatted: %s", s)
	}
}

func TestParseMountInfo(t *testing.T) {
	const data = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
101 22 0:50 / /var/lib/kubelet/pods/x/volumes/a\040b rw,nosuid,nodev,relatime shared:60 - fuse.cosmount cosmount rw,user_id=0,group_id=0
102 22 0:51 / /mnt/plain rw master:3 - tmpfs tmp rw
`
	got, err := parseMountInfo(strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	want := []MountInfo{
		{MountPoint: "/", FSType: "ext4", Source: "/dev/sda1"},
		{MountPoint: "/var/lib/kubelet/pods/x/volumes/a b", FSType: "fuse.cosmount", Source: "cosmount"},
		{MountPoint: "/mnt/plain", FSType: "tmpfs", Source: "tmp"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if !got[1].isFUSE() || got[2].isFUSE() {
		t.Error("isFUSE is wrong")
	}
	if _, err := parseMountInfo(strings.NewReader("1 2 3 4 5 6 7 8 9 10\n")); err == nil {
		t.Error("a line without separator parsed")
	}
}

// A record whose PID now belongs to another process (PID reuse) must not be
// adopted or signalled: the start time tells them apart.
func TestRecoverIgnoresReusedPID(t *testing.T) {
	m := newTestMounter(t, filepath.Join(t.TempDir(), "state"))
	target := filepath.Join(t.TempDir(), "t")
	dir := m.volumeDir(target)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	_, start, ok, err := procState(os.Getpid())
	if err != nil || !ok {
		t.Fatalf("procState(self) = %v, %v", ok, err)
	}
	if !procAlive(os.Getpid(), start) {
		t.Fatal("procAlive(self) = false")
	}
	// This test process stands in for the unrelated process with a reused PID.
	if err := m.writeRecord(dir, &Record{Target: target, VolumeID: "v", PID: os.Getpid(), ProcStart: start + 1}); err != nil {
		t.Fatal(err)
	}
	adopted, err := m.Recover(context.Background())
	if err != nil || len(adopted) != 0 {
		t.Fatalf("Recover = %v, %v; want nothing adopted", adopted, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale record kept: %v", err)
	}
}
