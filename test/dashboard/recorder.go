// Package dashboard renders the Grafana dashboard in deploy/grafana with
// real data: TestRenderDashboard runs cosmount's servers under the node's
// mounter against the emulator, records the mounter's metrics as
// Prometheus would scrape them, evaluates the dashboard's queries with
// Prometheus' own query engine and draws the panels (SVG in an HTML page,
// photographed by headless Chromium) into docs/images/dashboard.png. No
// Grafana runs here; the picture shows the dashboard's layout, titles,
// units and queries, drawn by this package, not Grafana's look.
package dashboard

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
)

// recorder scrapes a metrics endpoint into a TSDB, as a Prometheus server
// with one target would (job and instance labels included).
type recorder struct {
	url string
	db  *tsdb.DB
	dir string

	mu      sync.Mutex
	first   time.Time
	last    time.Time
	scrapes int
	samples int
}

func newRecorder(url string) *recorder { return &recorder{url: url} }

func (r *recorder) open() error {
	dir, err := os.MkdirTemp("", "cosmount-dashboard-tsdb-")
	if err != nil {
		return err
	}
	opts := tsdb.DefaultOptions()
	opts.RetentionDuration = 0
	db, err := tsdb.Open(dir, slog.New(slog.DiscardHandler), nil, opts, nil)
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	r.db, r.dir = db, dir
	return nil
}

// close releases the TSDB; queries must be done.
func (r *recorder) close() {
	if r.db != nil {
		r.db.Close()
		os.RemoveAll(r.dir)
	}
}

// every scrapes each interval until the returned function is called, which
// returns the number of samples stored or the first scrape error.
func (r *recorder) every(interval time.Duration) func() (int, error) {
	stop := make(chan struct{})
	done := make(chan error, 1)
	if err := r.open(); err != nil {
		return func() (int, error) { return 0, err }
	}
	go func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			if err := r.scrapeOnce(time.Now()); err != nil {
				done <- err
				return
			}
			select {
			case <-stop:
				done <- nil
				return
			case <-tick.C:
			}
		}
	}()
	return func() (int, error) {
		close(stop)
		err := <-done
		return r.samples, err
	}
}

// scrapeOnce reads the endpoint and appends every sample with timestamp at.
func (r *recorder) scrapeOnce(at time.Time) error {
	body, err := scrape(r.url)
	if err != nil {
		return err
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("parse the exposition: %w", err)
	}
	app := r.db.Appender(context.Background())
	ts := at.UnixMilli()
	n := 0
	add := func(name string, m *dto.Metric, extra []string, v float64) error {
		b := labels.NewScratchBuilder(len(m.Label) + 4)
		b.Add(labels.MetricName, name)
		b.Add("job", "cosmount-mounter")
		b.Add("instance", "node-1:9812")
		for _, lp := range m.Label {
			b.Add(lp.GetName(), lp.GetValue())
		}
		for i := 0; i+1 < len(extra); i += 2 {
			b.Add(extra[i], extra[i+1])
		}
		b.Sort()
		if _, err := app.Append(0, b.Labels(), ts, v); err != nil {
			return fmt.Errorf("append %s: %w", name, err)
		}
		n++
		return nil
	}
	for name, f := range fams {
		for _, m := range f.Metric {
			var err error
			switch {
			case m.Counter != nil:
				err = add(name, m, nil, m.Counter.GetValue())
			case m.Gauge != nil:
				err = add(name, m, nil, m.Gauge.GetValue())
			case m.Untyped != nil:
				err = add(name, m, nil, m.Untyped.GetValue())
			case m.Histogram != nil:
				h := m.Histogram
				hasInf := false
				for _, bkt := range h.Bucket {
					hasInf = hasInf || math.IsInf(bkt.GetUpperBound(), +1)
					if err = add(name+"_bucket", m, []string{"le", formatLe(bkt.GetUpperBound())}, float64(bkt.GetCumulativeCount())); err != nil {
						break
					}
				}
				if err == nil && !hasInf {
					err = add(name+"_bucket", m, []string{"le", "+Inf"}, float64(h.GetSampleCount()))
				}
				if err == nil {
					err = add(name+"_sum", m, nil, h.GetSampleSum())
				}
				if err == nil {
					err = add(name+"_count", m, nil, float64(h.GetSampleCount()))
				}
			}
			if err != nil {
				app.Rollback()
				return err
			}
		}
	}
	if err := app.Commit(); err != nil {
		return err
	}
	r.mu.Lock()
	if r.first.IsZero() {
		r.first = at
	}
	r.last = at
	r.scrapes++
	r.samples += n
	r.mu.Unlock()
	return nil
}

// formatLe writes a bucket bound as Prometheus' text format does.
func formatLe(v float64) string {
	if math.IsInf(v, +1) {
		return "+Inf"
	}
	return model.SampleValue(v).String()
}
