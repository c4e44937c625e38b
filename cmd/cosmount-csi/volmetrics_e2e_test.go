package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
	"github.com/cosmount/cosmount/pkg/volume"
)

// TestVolumeMetricsAndServerEnvironment: a pod writes a file and reads
// another through its volume; the mounter's metrics endpoint then serves
// every metric family of pkg/volume's ServerMetrics labelled with the
// volume (S3 latency per operation, retries, bytes dirty and uploading,
// FUSE operations and their latency, the token's remaining lifetime). The
// server runs with the proxy variables of the mounter's environment and
// nothing else of it.
func TestVolumeMetricsAndServerEnvironment(t *testing.T) {
	e := newE2E(t)
	e.startMounter()
	e.startPlugin()
	if _, err := e.cosClient().PutObject(context.Background(), e.env.Bucket, "from-api.txt",
		bytes.NewReader([]byte("read by the pod\n")), 16, cos.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	req := e.publish("metrics-pod", "default", emulatortest.WriterProfileID)
	target := req.TargetPath
	e.write(target, "written.txt", "written by the pod", emulatortest.WriterProfileID)
	if got, err := os.ReadFile(filepath.Join(target, "from-api.txt")); err != nil || string(got) != "read by the pod\n" {
		t.Fatalf("read through the volume: %q, %v", got, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(target, "no-such-file"), &st); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("stat of a missing file: %v", err)
	}

	url := e.metricsURL()
	var fams map[string]*dto.MetricFamily
	var missing []string
	deadline := time.Now().Add(60 * time.Second)
	for {
		fams = scrapeFamilies(t, url)
		missing = missing[:0]
		for _, m := range volume.ServerMetrics {
			if len(seriesOf(fams[m.Name], req.VolumeId)) == 0 {
				missing = append(missing, m.Name)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(missing) > 0 {
		t.Fatalf("the mounter serves no series of %v for volume %s", missing, req.VolumeId)
	}
	count := func(name string, labels ...string) float64 {
		t.Helper()
		var sum float64
		for _, s := range seriesOf(fams[name], req.VolumeId) {
			if hasLabels(s, labels...) {
				switch {
				case s.Histogram != nil:
					sum += float64(s.Histogram.GetSampleCount())
				case s.Counter != nil:
					sum += s.Counter.GetValue()
				case s.Gauge != nil:
					sum += s.Gauge.GetValue()
				}
			}
		}
		return sum
	}
	for _, c := range []struct {
		name   string
		labels []string
	}{
		{volume.MetricS3RequestDuration, []string{"operation", "PutObject"}},
		{volume.MetricS3RequestDuration, []string{"operation", "GetObject"}},
		{volume.MetricFUSEDuration, []string{"operation", "write"}},
		{volume.MetricFUSEDuration, []string{"operation", "read"}},
		{volume.MetricFUSEDuration, []string{"operation", "lookup"}},
		{volume.MetricFUSEErrors, []string{"operation", "lookup", "errno", "ENOENT"}},
		{volume.MetricS3Requests, []string{"operation", "PutObject"}},
	} {
		if count(c.name, c.labels...) < 1 {
			t.Errorf("%s%v has no observation for the volume", c.name, c.labels)
		}
	}
	// One small file written: one PutObject, counted once.
	if n := count(volume.MetricS3Requests, "operation", "PutObject"); n != 1 {
		t.Errorf("%s{operation=PutObject} = %v after one small file was written, want 1", volume.MetricS3Requests, n)
	}
	// The emulator's tokens live an hour; the server has one.
	if left := count(volume.MetricTokenExpiresIn); left < 60 || left > 3700 {
		t.Errorf("%s = %v, want a token that lives for a while yet", volume.MetricTokenExpiresIn, left)
	}
	// Everything was uploaded at close.
	if dirty, up := count(volume.MetricDirtyBytes), count(volume.MetricUploadingBytes); dirty != 0 || up != 0 {
		t.Errorf("dirty %v bytes, uploading %v bytes after every file was closed", dirty, up)
	}

	// The server's environment: the mounter's proxy settings, and not the
	// rest of the mounter's environment (startNS gives it an API key).
	env := serverEnviron(t, e.mounter.PID(), e.status(target).PID)
	for _, want := range []string{"HTTPS_PROXY=http://127.0.0.1:9", "NO_PROXY=127.0.0.1,localhost"} {
		if !containsLine(env, want) {
			t.Errorf("the server's environment lacks %s: %q", want, env)
		}
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, "IBMCLOUD_API_KEY=") || strings.HasPrefix(kv, "HOME=") {
			t.Errorf("the server inherited %s from the mounter", strings.SplitN(kv, "=", 2)[0])
		}
	}
	if err := e.unpublish(req); err != nil {
		t.Fatal(err)
	}
}

// scrapeFamilies reads and parses a metrics endpoint.
func scrapeFamilies(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s %v", url, resp.Status, err)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// seriesOf returns the series of f labelled with volumeID.
func seriesOf(f *dto.MetricFamily, volumeID string) []*dto.Metric {
	if f == nil {
		return nil
	}
	var out []*dto.Metric
	for _, m := range f.Metric {
		if hasLabels(m, "volume_id", volumeID) {
			out = append(out, m)
		}
	}
	return out
}

// hasLabels reports whether m has every name=value pair of kv.
func hasLabels(m *dto.Metric, kv ...string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, lp := range m.Label {
			found = found || (lp.GetName() == kv[i] && lp.GetValue() == kv[i+1])
		}
		if !found {
			return false
		}
	}
	return true
}

// serverEnviron reads the environment of the server whose PID in the
// mounter's namespace is nsPID.
func serverEnviron(t *testing.T, unsharePID, nsPID int) []string {
	t.Helper()
	pid := hostPIDOf(t, unsharePID, nsPID)
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
}

// hostPIDOf finds, below the process unsharePID, the process whose PID in
// its own namespace (the last NSpid) is nsPID.
func hostPIDOf(t *testing.T, unsharePID, nsPID int) int {
	t.Helper()
	var walk func(pid int) int
	walk = func(pid int) int {
		for _, c := range childrenOf(pid) {
			if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c)); err == nil {
				for _, l := range strings.Split(string(status), "\n") {
					if f := strings.Fields(l); len(f) >= 3 && f[0] == "NSpid:" && f[len(f)-1] == fmt.Sprint(nsPID) {
						return c
					}
				}
			}
			if found := walk(c); found != 0 {
				return found
			}
		}
		return 0
	}
	pid := walk(unsharePID)
	if pid == 0 {
		t.Fatalf("no process with namespace PID %d below %d", nsPID, unsharePID)
	}
	return pid
}

func containsLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}
