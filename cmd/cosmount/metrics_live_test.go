package main

import (
	"errors"
	"math"
	"slices"
	"sort"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/volume"
)

// TestServerMetricsMatchTheTable: once everything has happened once, a
// server's registry serves exactly the families pkg/volume lists, with
// their types and labels, and the live values say what happened.
func TestServerMetricsMatchTheTable(t *testing.T) {
	m := newMountMetrics()
	now := time.Unix(1_800_000_000, 0)
	m.now = func() time.Time { return now }
	m.ObserveRequest("PutObject", 100, nil)
	m.ObserveRequest("GetObject", 0, errors.New("boom"))
	m.AttemptStarted("PutObject", false, 100)
	m.AttemptStarted("PutObject", true, 100)
	if got := m.uploading.Load(); got != 200 {
		t.Errorf("uploading %d while two attempts of 100 bytes run", got)
	}
	m.AttemptDone("PutObject", 100, 30*time.Millisecond, errors.New("500"))
	m.AttemptDone("PutObject", 100, 20*time.Millisecond, nil)
	m.ObserveOp("lookup", time.Millisecond, "ENOENT")
	m.ObserveOp("read", 2*time.Millisecond, "")
	m.tokenRefreshed(nil)
	m.watchTokens(func() time.Time { return now.Add(42 * time.Minute) })

	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		got[f.GetName()] = f
	}
	for _, want := range volume.ServerMetrics {
		f, ok := got[want.Name]
		if !ok {
			t.Errorf("%s is not served", want.Name)
			continue
		}
		delete(got, want.Name)
		if typ := map[dto.MetricType]volume.MetricType{dto.MetricType_COUNTER: volume.Counter, dto.MetricType_GAUGE: volume.Gauge,
			dto.MetricType_HISTOGRAM: volume.Histogram}[f.GetType()]; typ != want.Type {
			t.Errorf("%s is a %v, the table says %s", want.Name, f.GetType(), want.Type)
		}
		for _, s := range f.Metric {
			var names []string
			for _, lp := range s.Label {
				names = append(names, lp.GetName())
			}
			sort.Strings(names)
			wantNames := append([]string(nil), want.Labels...)
			sort.Strings(wantNames)
			if !slices.Equal(names, wantNames) {
				t.Errorf("%s has labels %v, the table says %v", want.Name, names, want.Labels)
			}
		}
	}
	for name := range got {
		t.Errorf("%s is served but not in pkg/volume's ServerMetrics", name)
	}

	value := func(name string, labels ...string) float64 {
		t.Helper()
		for _, f := range fams {
			if f.GetName() != name {
				continue
			}
		series:
			for _, s := range f.Metric {
				for i := 0; i+1 < len(labels); i += 2 {
					found := false
					for _, lp := range s.Label {
						found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
					}
					if !found {
						continue series
					}
				}
				switch {
				case s.Counter != nil:
					return s.Counter.GetValue()
				case s.Gauge != nil:
					return s.Gauge.GetValue()
				case s.Histogram != nil:
					return float64(s.Histogram.GetSampleCount())
				}
			}
		}
		t.Fatalf("no series %s %v", name, labels)
		return 0
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{volume.MetricS3RequestDuration, []string{"operation", "PutObject"}, 2},
		{volume.MetricS3Retries, []string{"operation", "PutObject"}, 1},
		{volume.MetricUploadingBytes, nil, 0},
		{volume.MetricDirtyBytes, nil, 0},
		{volume.MetricFUSEDuration, []string{"operation", "lookup"}, 1},
		{volume.MetricFUSEErrors, []string{"operation", "lookup", "errno", "ENOENT"}, 1},
		{volume.MetricTokenExpiresIn, nil, 42 * 60},
	} {
		if v := value(c.name, c.labels...); math.Abs(v-c.want) > 1e-9 {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
}

// An HMAC server has no token: no expiry series rather than a made-up one.
func TestNoTokenNoExpiry(t *testing.T) {
	m := newMountMetrics()
	m.watchTokens(func() time.Time { return time.Time{} })
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == volume.MetricTokenExpiresIn {
			t.Errorf("%s served without a token: %v", f.GetName(), f.Metric)
		}
	}
}

// A lookup of a name that does not exist is not an S3 error.
func TestNotFoundIsNotAnError(t *testing.T) {
	m := newMountMetrics()
	m.ObserveRequest("HeadObject", 0, &cos.Error{Op: "HeadObject", Kind: cos.ErrNotFound})
	m.ObserveRequest("HeadObject", 0, &cos.Error{Op: "HeadObject", Kind: cos.ErrAccessDenied})
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == volume.MetricS3Errors {
			if v := f.Metric[0].Counter.GetValue(); v != 1 {
				t.Errorf("%s = %v after a 404 and a 403, want 1", f.GetName(), v)
			}
			return
		}
	}
	t.Errorf("%s not served", volume.MetricS3Errors)
}
