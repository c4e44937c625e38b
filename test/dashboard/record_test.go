package dashboard

import (
	"bytes"
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
	"github.com/cosmount/cosmount/pkg/emulator/faults"
	"github.com/cosmount/cosmount/pkg/mounterapi"
	"github.com/cosmount/cosmount/pkg/volume"
)

var (
	outPNG   = flag.String("dashboard.out", "", "write the rendered dashboard here (PNG); without it the test is skipped")
	outHTML  = flag.String("dashboard.html", "", "also keep the HTML page the PNG is a screenshot of")
	runFor   = flag.Duration("dashboard.duration", 4*time.Minute, "how long the workload runs")
	chromium = flag.String("dashboard.chromium", "chromium", "headless Chromium that takes the screenshot")
)

// repoRoot is two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// TestRenderDashboard runs two volumes through the node's mounter against
// the emulator with a workload that touches every panel (writes small and
// large files, reads, lists, misses names; COS latency and failures for a
// while; short-lived tokens), scrapes the mounter's metrics endpoint as
// Prometheus would, evaluates the dashboard's queries over the recording
// with Prometheus' own engine and renders the panels to a PNG. It is the
// `make dashboard-image` tool, not part of `make test`.
func TestRenderDashboard(t *testing.T) {
	if *outPNG == "" {
		t.Skip("run with -dashboard.out FILE.png (make dashboard-image)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("mounting needs root")
	}
	if _, err := exec.LookPath(*chromium); err != nil {
		t.Fatalf("no %s to take the screenshot (apt-get install chromium): %v", *chromium, err)
	}
	root := repoRoot(t)
	dash, err := loadDashboard(filepath.Join(root, "deploy", "grafana", "cosmount-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}

	bin := t.TempDir()
	for _, cmd := range []string{"cosmount", "cosmount-csi"} {
		build := exec.Command("go", "build", "-o", filepath.Join(bin, cmd), "./cmd/"+cmd)
		build.Dir = root
		build.Env = append(os.Environ(), "GOWORK=off")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", cmd, err, out)
		}
	}

	env := emulatortest.Start(t)
	// Short-lived access tokens, so that the lifetime panel shows refreshes.
	env.SetAccessTokenLifetime(2 * time.Minute)
	work, err := os.MkdirTemp("", "cosmount-dashboard-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })

	m := startMounter(t, filepath.Join(bin, "cosmount-csi"), filepath.Join(bin, "cosmount"), work)
	volumes := []string{"pvc-team-a-reports", "pvc-team-b-models"}
	var targets []string
	for i, id := range volumes {
		target := filepath.Join(work, "pods", id, "mount")
		spec := volume.Spec{
			VolumeID: id, Target: target, Bucket: env.Bucket, Prefix: fmt.Sprintf("team-%c", 'a'+i),
			Endpoint: env.COSURL, IAMEndpoint: env.IAMURL, Auth: volume.AuthTrustedProfile,
			Profile: volume.Profile{ID: emulatortest.WriterProfileID}, Options: volume.DefaultOptions(),
		}
		token := env.MintPodToken(t, "default", "default", id, time.Hour)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		_, err := m.client.Publish(ctx, &mounterapi.PublishRequest{Spec: spec, Credentials: volume.Credentials{CRToken: token}})
		cancel()
		if err != nil {
			t.Fatalf("publish %s: %v\n%s", id, err, m.log())
		}
		targets = append(targets, target)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			if _, err := m.client.Unpublish(ctx, &mounterapi.UnpublishRequest{Target: target}); err != nil {
				t.Errorf("unpublish %s: %v", target, err)
			}
		})
	}

	rec := newRecorder(m.metricsURL)
	stopScrape := rec.every(2 * time.Second)
	t.Logf("workload on %v for %v", volumes, *runFor)
	runWorkload(t, env, targets, *runFor)
	samples, err := stopScrape()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("recorded %d samples in %d scrapes", samples, rec.scrapes)

	panels, err := evaluate(dash, rec, rec.first.Add(30*time.Second), rec.last, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	page := renderPage(dash, panels, rec.first.Add(30*time.Second), rec.last)
	htmlPath := *outHTML
	if htmlPath == "" {
		htmlPath = filepath.Join(t.TempDir(), "dashboard.html")
	}
	if err := os.WriteFile(htmlPath, []byte(page.html), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := screenshot(*chromium, htmlPath, *outPNG, page.width, page.height); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%dx%d)", *outPNG, page.width, page.height)
}

// mounter is `cosmount-csi --mode=mounter` run by the test.
type mounter struct {
	cmd        *exec.Cmd
	logPath    string
	client     *mounterapi.Client
	metricsURL string
}

func (m *mounter) log() string {
	b, _ := os.ReadFile(m.logPath)
	return string(b)
}

var metricsAddrRE = regexp.MustCompile(`"Serving mounter metrics" address="(127\.0\.0\.1:\d+)"`)

func startMounter(t *testing.T, csiBin, serverBin, work string) *mounter {
	t.Helper()
	m := &mounter{logPath: filepath.Join(work, "mounter.log")}
	logFile, err := os.Create(m.logPath)
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "unix://" + filepath.Join(work, "mounter.sock")
	m.cmd = exec.Command(csiBin, "--mode", "mounter", "--mounter-endpoint", endpoint,
		"--state-dir", filepath.Join(work, "state"), "--cosmount-binary", serverBin, "--supervise", "false",
		"--mounter-metrics-address", "127.0.0.1:0", "--v", "2")
	m.cmd.Stdout, m.cmd.Stderr = logFile, logFile
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logFile.Close()
	exited := make(chan struct{})
	go func() { m.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		// SIGTERM: every server flushes and unmounts; then whatever is left.
		m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(90 * time.Second):
			syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if m.client != nil {
			m.client.Close()
		}
		out, _ := exec.Command("sh", "-c", "grep -o ' "+work+"[^ ]*' /proc/self/mountinfo").Output()
		for _, mnt := range strings.Fields(string(out)) {
			exec.Command("fusermount3", "-uz", mnt).Run()
		}
	})
	c, err := mounterapi.Dial(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	m.client = c
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.WaitReady(ctx); err != nil {
		t.Fatalf("the mounter did not come up: %v\n%s", err, m.log())
	}
	deadline := time.Now().Add(time.Minute)
	for m.metricsURL == "" {
		if a := metricsAddrRE.FindStringSubmatch(m.log()); a != nil {
			m.metricsURL = "http://" + a[1] + "/metrics"
		} else if time.Now().After(deadline) {
			t.Fatalf("the mounter did not say where its metrics are:\n%s", m.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return m
}

// runWorkload keeps both volumes busy for d: a writer of small files and
// now and then a large one (a streaming multipart upload) on the first, a
// reader and lister that also looks up names that do not exist on the
// second, and reads across both. A third of the way in COS turns slow for
// a while, and from halfway on some uploads fail once (and are retried).
func runWorkload(t *testing.T, env *emulatortest.Env, targets []string, d time.Duration) {
	t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if len(errs) < 10 {
			errs = append(errs, err)
		}
	}
	small := make([]byte, 64<<10)
	rand.Read(small)
	loop := func(pause time.Duration, f func(i int)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(pause):
				}
				f(i)
			}
		}()
	}
	a, b := targets[0], targets[1]
	for _, dir := range []string{filepath.Join(a, "daily"), filepath.Join(b, "weights")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	loop(400*time.Millisecond, func(i int) {
		if err := os.WriteFile(filepath.Join(a, "daily", fmt.Sprintf("report-%04d.csv", i%200)), small[:4096+(i*997)%len(small[4096:])], 0o644); err != nil {
			fail(err)
		}
	})
	loop(25*time.Second, func(i int) {
		if err := writeLarge(filepath.Join(b, "weights", fmt.Sprintf("checkpoint-%02d.bin", i)), 48<<20); err != nil {
			fail(err)
		}
	})
	loop(300*time.Millisecond, func(i int) {
		entries, err := os.ReadDir(filepath.Join(a, "daily"))
		if err != nil {
			fail(err)
			return
		}
		if len(entries) > 0 {
			if _, err := os.ReadFile(filepath.Join(a, "daily", entries[i%len(entries)].Name())); err != nil {
				fail(err)
			}
		}
		var st syscall.Stat_t
		syscall.Stat(filepath.Join(b, fmt.Sprintf("not-there-%d.lock", i)), &st) // ENOENT, as tools probe names
	})
	loop(2*time.Second, func(i int) {
		entries, _ := os.ReadDir(filepath.Join(b, "weights"))
		if len(entries) == 0 {
			return
		}
		f, err := os.Open(filepath.Join(b, "weights", entries[i%len(entries)].Name()))
		if err != nil {
			fail(err)
			return
		}
		io.Copy(io.Discard, io.LimitReader(f, 16<<20))
		f.Close()
	})

	cos := env.COSFaults()
	start := time.Now()
	at := func(frac float64) <-chan time.Time {
		return time.After(time.Until(start.Add(time.Duration(frac * float64(d)))))
	}
	<-at(0.3)
	cos.Apply(faults.Command{Action: "latency", Duration: "150ms"})
	<-at(0.45)
	cos.Apply(faults.Command{Action: "latency", Duration: "0s"})
	// Until 70% of the run, one upload in 1.5 s fails once: it is
	// retried, so no writer sees it.
	end := at(0.7)
failing:
	for {
		cos.Apply(faults.Command{Action: "fail", Rule: faults.Rule{Kind: faults.ServiceUnavailable, Count: 1, Method: "PUT"}})
		select {
		case <-time.After(1500 * time.Millisecond):
		case <-end:
			break failing
		}
	}
	<-at(1)
	close(stop)
	wg.Wait()
	cos.Apply(faults.Command{Action: "clear"})
	for _, err := range errs {
		t.Logf("workload error (the run goes on): %v", err)
	}
}

// writeLarge writes n bytes in 1 MiB chunks, as a program streaming a
// file would.
func writeLarge(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	chunk := make([]byte, 1<<20)
	rand.Read(chunk)
	for written := 0; written < n; written += len(chunk) {
		if _, err := f.Write(chunk); err != nil {
			f.Close()
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return f.Close()
}

// scrape reads a metrics endpoint.
func scrape(url string) ([]byte, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: (&net.Dialer{}).DialContext}}
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, resp.Body); err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return buf.Bytes(), nil
}
