package main

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The demo is the newcomer's first run: these tests run it end to end, and
// interrupt it at several points to show that it always cleans up.

func needRootAndFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the demo mounts FUSE and needs root")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("no fusermount3 (apt-get install fuse3)")
	}
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// prebuilt builds the binaries once for the interruption tests.
func prebuilt(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "cosmount-demo-test-bin-"); binErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		binErr = buildBinaries(ctx, binDir)
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func TestDemoEndToEnd(t *testing.T) {
	needRootAndFUSE(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var out bytes.Buffer
	// No binary directory: the demo builds them itself, as `go run ./test/demo` does.
	err := run(ctx, &out, "")
	t.Cleanup(func() { assertLeftNothing(t, out.String()) })
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	text := out.String()
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "DEMO PASSED:") {
		t.Errorf("last line = %q, want the success line\n%s", last, text)
	}
	for _, want := range []string{
		"[9/9] Unpublish",
		"NodeGetInfo -> node_id demo-node",
		"a child of the mounter (pid",
		`12 bytes: "hello world\n"`,
		"* cos PUT    /test-bucket/hello.txt     PutObject      200              bearer  profile Profile-writer (12 bytes)",
		"-> PermissionDenied:",
		"BXNIM0398E",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q\n%s", want, text)
		}
	}
	if strings.Contains(text, "eyJ") {
		t.Errorf("the output shows a token:\n%s", text)
	}
}

func TestDemoInterrupted(t *testing.T) {
	needRootAndFUSE(t)
	bin := prebuilt(t)
	// Each case cancels the demo's context (what Ctrl-C does) as soon as the
	// output shows marker.
	tests := []struct {
		name, marker string
	}{
		{"emulator starting", "[2/9]"},
		{"mounter started", "answers API v1"},
		{"before the publish", "NodePublishVolume volume_id=pv-demo"},
		{"volume mounted", "-> OK after"},
		{"after the write", "the pod sees hello.txt"},
		{"during the refusal", "NodePublishVolume volume_id=pv-intruder"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			w := &cancelOn{marker: tc.marker, cancel: cancel}
			err := run(ctx, w, bin)
			text := w.String()
			t.Cleanup(func() { assertLeftNothing(t, text) })
			if err == nil || !strings.Contains(err.Error(), "interrupted") {
				t.Fatalf("run = %v, want an interruption\n%s", err, text)
			}
			if strings.Contains(err.Error(), "cleanup") {
				t.Errorf("the cleanup failed: %v\n%s", err, text)
			}
			if strings.Contains(text, "DEMO PASSED") {
				t.Errorf("an interrupted demo claims success\n%s", text)
			}
		})
	}
}

func TestDemoWithoutBinaries(t *testing.T) {
	needRootAndFUSE(t)
	var out bytes.Buffer
	err := run(context.Background(), &out, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "step 1 (") {
		t.Fatalf("run with an empty binary directory = %v, want a step 1 failure\n%s", err, out.String())
	}
	assertLeftNothing(t, out.String())
}

// cancelOn collects the demo's output and cancels once marker appears.
type cancelOn struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	cancel context.CancelFunc
}

func (w *cancelOn) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.marker) {
		w.cancel()
	}
	return len(p), nil
}

func (w *cancelOn) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

var (
	workDirLine = regexp.MustCompile(`Working directory: (\S+)`)
	pidMention  = regexp.MustCompile(`pid (\d+)`)
)

// assertLeftNothing checks, from the demo's output, that its working
// directory (with every mount, socket and token file in it) is gone and that
// no process it mentioned still runs.
func assertLeftNothing(t *testing.T, out string) {
	t.Helper()
	m := workDirLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the output names no working directory:\n%s", out)
	}
	work := m[1]
	if mounts, err := mountsUnder(work); err != nil || len(mounts) != 0 {
		t.Errorf("mounts left under %s: %v (%v)", work, mounts, err)
	}
	if _, err := os.Stat(work); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the working directory %s is still there (%v)", work, err)
	}
	for _, pm := range pidMention.FindAllStringSubmatch(out, -1) {
		pid, _ := strconv.Atoi(pm[1])
		// The command line guards against the PID's reuse by another program.
		cmdline, _ := os.ReadFile("/proc/" + pm[1] + "/cmdline")
		if processRuns(pid) && bytes.Contains(cmdline, []byte("cosmount")) {
			t.Errorf("process %d (%s) still runs", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		}
	}
}
