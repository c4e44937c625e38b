package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cosmount/cosmount/pkg/mounter"
)

// metricsAddrRE finds the address the mounter logged for
// --mounter-metrics-address 127.0.0.1:0 (the kernel picks the port, so
// parallel runs cannot collide).
var metricsAddrRE = regexp.MustCompile(`"Serving mounter metrics" address="(127\.0\.0\.1:\d+)"`)

// metricsURL is the /metrics URL of the running mounter.
func (e *e2e) metricsURL() string {
	e.t.Helper()
	logPath := filepath.Join(e.dir, "mounter.log")
	deadline := time.Now().Add(60 * time.Second)
	for {
		data, err := os.ReadFile(logPath)
		if err != nil {
			e.t.Fatal(err)
		}
		if m := metricsAddrRE.FindSubmatch(data); m != nil {
			return "http://" + string(m[1]) + "/metrics"
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the mounter did not log its metrics address; log:\n%s", data)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// scrapeVolume reads the mounter's metrics endpoint and returns the raw body
// and the value of every series of volumeID/target, keyed by
// "name{first label=value}" without the volume labels.
func (e *e2e) scrapeVolume(url, volumeID, target string) ([]byte, map[string]float64) {
	e.t.Helper()
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		e.t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("scrape %s: %s\n%s", url, resp.Status, body)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		e.t.Fatalf("parse the mounter's metrics: %v\n%s", err, body)
	}
	hash := mounter.TargetHash(target)
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.Metric {
			var vol, th, other string
			for _, lp := range m.Label {
				switch lp.GetName() {
				case "volume_id":
					vol = lp.GetValue()
				case "target_hash":
					th = lp.GetValue()
				default:
					other = fmt.Sprintf("%s=%s", lp.GetName(), lp.GetValue())
				}
			}
			if vol == volumeID && th == hash {
				out[name+"{"+other+"}"] = value(m)
			}
		}
	}
	return body, out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return m.GetUntyped().GetValue()
}

// assertVolumeMetrics checks that the mounter's metrics endpoint
// re-exports the volume's server metrics after the pod wrote to it: at least
// one PutObject and one successful token exchange, labelled with the volume.
func (e *e2e) assertVolumeMetrics(volumeID, target string) {
	e.t.Helper()
	url := e.metricsURL()
	want := []string{
		`cosmount_s3_requests_total{operation=PutObject}`,
		`cosmount_iam_token_refreshes_total{result=success}`,
		`cosmount_volume_metrics_up{}`,
	}
	// Polled only so that a loaded machine cannot make this flaky; the PUT
	// has completed before the shell's write returned.
	deadline := time.Now().Add(60 * time.Second)
	for {
		body, got := e.scrapeVolume(url, volumeID, target)
		missing := ""
		for _, k := range want {
			if got[k] < 1 {
				missing = k
				break
			}
		}
		if missing == "" {
			if bytes.Contains(body, []byte("eyJ")) {
				e.t.Error("the metrics endpoint shows something token-shaped")
			}
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the mounter's metrics lack %s >= 1 for volume %s; volume series: %v", missing, volumeID, got)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
