package testproc

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseMountinfo(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Mount
	}{
		{
			name: "optional fields and escapes",
			in: "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n" +
				"40 36 0:50 / /tmp/m fuse.cosmount rw shared:2 unbindable - fuse.cosmount cosmount rw\n",
			want: []Mount{
				{ID: 36, Point: "/mnt/with space", FSType: "ext3"},
				{ID: 40, Point: "/tmp/m", FSType: "fuse.cosmount"},
			},
		},
		{
			name: "short and separator-less lines",
			in:   "1 2 3\n7 1 0:1 / /x rw\n",
			want: []Mount{{ID: 7, Point: "/x"}},
		},
		{name: "empty", in: "", want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseMountinfo(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	tests := []struct{ in, want string }{
		{`/plain`, `/plain`},
		{`/a\040b`, `/a b`},
		{`/tab\011end\134`, "/tab\tend\\"},
		{`/not\08`, `/not\08`},
		{`/short\04`, `/short\04`},
	}
	for _, tc := range tests {
		if got := UnescapeMountinfo(tc.in); got != tc.want {
			t.Errorf("UnescapeMountinfo(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestMountsOfThisProcess(t *testing.T) {
	if !IsMounted("/proc", "proc") {
		t.Fatal("/proc is not listed as a proc mount")
	}
	if IsMounted("/proc", "no-such-fs") {
		t.Error("/proc is listed with a file system type it does not have")
	}
	under, err := MountsUnder("/proc")
	if err != nil {
		t.Fatal(err)
	}
	if len(under) == 0 || under[0].Point != "/proc" {
		t.Errorf("MountsUnder(/proc) = %+v, want /proc first", under)
	}
	for _, m := range under {
		if m.Point != "/proc" && !strings.HasPrefix(m.Point, "/proc/") {
			t.Errorf("MountsUnder(/proc) lists %s", m.Point)
		}
	}
}

func TestProcfsOfThisProcess(t *testing.T) {
	pid := os.Getpid()
	if !Running(pid) {
		t.Error("this process does not count as running")
	}
	if kib, err := PeakRSSKiB(pid); err != nil || kib <= 0 {
		t.Errorf("PeakRSSKiB = %d, %v", kib, err)
	}
	if _, err := CPUSeconds(pid); err != nil {
		t.Errorf("CPUSeconds: %v", err)
	}
	before, err := MinorFaults(pid)
	if err != nil {
		t.Fatalf("MinorFaults: %v", err)
	}
	// Touching fresh pages faults them in: the count must grow.
	fresh := make([]byte, 8<<20)
	for i := 0; i < len(fresh); i += 4096 {
		fresh[i] = 1
	}
	if after, err := MinorFaults(pid); err != nil || after <= before {
		t.Errorf("MinorFaults after touching 8 MiB = %d (before %d), %v", after, before, err)
	}
}

// startSh starts a shell script as a Process logging into a temp dir; the
// test's cleanup kills it if a failure left it running.
func startSh(t *testing.T, script string) *Process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "sh.log")
	p, err := Start("sh", logPath, 0o600, exec.Command("sh", "-c", script))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	return p
}

func TestStop(t *testing.T) {
	tests := []struct {
		name       string
		script     string
		grace      time.Duration
		wantKilled bool
		wantTERM   bool // exit status is "killed by SIGTERM"
	}{
		{name: "dies of SIGTERM", script: "echo up; exec sleep 600", grace: 2 * time.Minute, wantTERM: true},
		{name: "exits cleanly on SIGTERM", script: "trap 'exit 0' TERM; echo up; while :; do sleep 1; done", grace: 2 * time.Minute},
		{name: "ignores SIGTERM", script: "trap '' TERM; echo up; while :; do sleep 1; done", grace: 300 * time.Millisecond, wantKilled: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startSh(t, tc.script)
			// Wait for the trap to be installed: the script says so.
			deadline := time.Now().Add(time.Minute)
			for {
				if out, _ := Tail(p.LogPath, 1); out == "up" {
					break
				}
				if time.Now().After(deadline) || p.Exited() {
					t.Fatalf("the script did not start (exited: %v)", p.Exited())
				}
				time.Sleep(20 * time.Millisecond)
			}
			killed, err := p.Stop(tc.grace)
			if err != nil {
				t.Fatal(err)
			}
			if killed != tc.wantKilled {
				t.Errorf("killed = %v, want %v", killed, tc.wantKilled)
			}
			if !p.Exited() || Running(p.PID()) {
				t.Error("the process still runs after Stop")
			}
			if got := p.TerminatedBySIGTERM(); got != tc.wantTERM {
				t.Errorf("TerminatedBySIGTERM = %v (exit %v), want %v", got, p.Err(), tc.wantTERM)
			}
			if again, err := p.Stop(tc.grace); again || err != nil {
				t.Errorf("second Stop = %v, %v; want a no-op", again, err)
			}
		})
	}
}

func TestWaitMountedReportsAnExit(t *testing.T) {
	p := startSh(t, "echo bye; exit 3")
	err := WaitMounted(context.Background(), p, t.TempDir(), "", true, 2*time.Minute)
	if err == nil || !strings.Contains(err.Error(), "exited before") {
		t.Fatalf("WaitMounted = %v, want an exit error", err)
	}
	if out, err := Tail(p.LogPath, 5); err != nil || out != "bye" {
		t.Errorf("Tail = %q, %v; want the script's output", out, err)
	}
}

func TestWaitMountedSeesAMount(t *testing.T) {
	p := startSh(t, "exec sleep 600")
	// /proc is mounted whatever p does; live stats it too.
	if err := WaitMounted(context.Background(), p, "/proc", "proc", true, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
}

func TestTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("1\n2\n3\n4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		n    int
		want string
	}{{2, "3\n4"}, {4, "1\n2\n3\n4"}, {9, "1\n2\n3\n4"}}
	for _, tc := range tests {
		if got, err := Tail(path, tc.n); err != nil || got != tc.want {
			t.Errorf("Tail(%d) = %q, %v; want %q", tc.n, got, err, tc.want)
		}
	}
	if _, err := Tail(filepath.Join(t.TempDir(), "missing"), 1); err == nil {
		t.Error("Tail of a missing file did not fail")
	}
}
