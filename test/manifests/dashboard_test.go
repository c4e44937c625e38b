package manifests_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"

	"github.com/cosmount/cosmount/pkg/mounter"
	cosvolume "github.com/cosmount/cosmount/pkg/volume"
)

// DashboardFile is the Grafana dashboard of the volume metrics.
const DashboardFile = "deploy/grafana/cosmount-dashboard.json"

// loadDashboard decodes the dashboard strictly with Grafana's own schema
// (the foundation SDK's generated types: unknown fields, wrong types and
// missing required fields are errors, panels and their Prometheus queries
// included) and validates it.
func loadDashboard(t *testing.T) (*dashboard.Dashboard, []byte) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), DashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	plugins.RegisterDefaultPlugins()
	var d dashboard.Dashboard
	if err := sdkError(d.UnmarshalJSONStrict(data)); err != nil {
		t.Fatalf("%s is not a Grafana dashboard: %v", DashboardFile, err)
	}
	if err := sdkError(d.Validate()); err != nil {
		t.Fatalf("%s: %v", DashboardFile, err)
	}
	return &d, data
}

// sdkError undoes a quirk of the SDK: it returns an empty (nil) list of
// errors as a non-nil error.
func sdkError(err error) error {
	if be, ok := err.(cog.BuildErrors); ok && len(be) == 0 {
		return nil
	}
	return err
}

// dashboardQueries returns every PromQL expression of the dashboard, with
// the panel it belongs to: panel targets and query variables. Panels are
// decoded one by one (strictly again): the SDK's PanelOrRowPanel decoder
// checks a panel but does not keep it (its decoders return an empty list
// of errors as a non-nil error, and the callers then drop the result).
func dashboardQueries(t *testing.T, d *dashboard.Dashboard, data []byte) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	var raw struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	type panelQueries struct {
		title   string
		targets []json.RawMessage
	}
	var panels []panelQueries
	add := func(i int, r json.RawMessage) {
		var p dashboard.Panel
		if err := sdkError(p.UnmarshalJSONStrict(r)); err != nil {
			t.Fatalf("panel %d: %v", i, err)
		}
		if p.Title == nil || p.Datasource == nil || p.Datasource.Type == nil || *p.Datasource.Type != "prometheus" {
			t.Errorf("panel %d: a title and a Prometheus data source are required", i)
			return
		}
		var targets struct {
			Targets []json.RawMessage `json:"targets"`
		}
		if err := json.Unmarshal(r, &targets); err != nil {
			t.Fatal(err)
		}
		panels = append(panels, panelQueries{*p.Title, targets.Targets})
	}
	for i, r := range raw.Panels {
		var kind struct {
			Type   string
			Panels []json.RawMessage
		}
		if err := json.Unmarshal(r, &kind); err != nil {
			t.Fatal(err)
		}
		if kind.Type != "row" {
			add(i, r)
			continue
		}
		var row dashboard.RowPanel
		if err := sdkError(row.UnmarshalJSONStrict(r)); err != nil {
			t.Fatalf("panel %d: %v", i, err)
		}
		for _, inner := range kind.Panels {
			add(i, inner)
		}
	}
	for _, p := range panels {
		if len(p.targets) == 0 {
			t.Errorf("panel %q has no query", p.title)
		}
		// The SDK's panel decoder checks targets but does not keep them:
		// each is decoded, strictly, as the Prometheus query it must be.
		for _, target := range p.targets {
			var q prometheus.Dataquery
			if err := sdkError(q.UnmarshalJSONStrict(target)); err != nil {
				t.Errorf("panel %q: %v", p.title, err)
				continue
			}
			out[p.title] = append(out[p.title], q.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" || v.Query == nil {
			continue
		}
		raw, err := json.Marshal(v.Query)
		if err != nil {
			t.Fatal(err)
		}
		var q struct{ Query string }
		if err := json.Unmarshal(raw, &q); err != nil || q.Query == "" {
			t.Errorf("variable %s: query %s", v.Name, raw)
			continue
		}
		out["variable "+v.Name] = append(out["variable "+v.Name], q.Query)
	}
	return out
}

// metricRE finds the metric names in a PromQL expression (cosmount's all
// start with cosmount_).
var metricRE = regexp.MustCompile(`\bcosmount_[a-z0-9_]+\b`)

// TestDashboard: the dashboard loads as Grafana JSON, every query names a
// metric that exists (a server's, which the mounter serves labelled with
// the volume, or the mounter's own), every server metric is shown
// somewhere, and every query of the volume metrics filters on the $volume
// variable.
func TestDashboard(t *testing.T) {
	d, data := loadDashboard(t)
	if d.Uid == nil || *d.Uid == "" || d.Title == nil || *d.Title == "" {
		t.Error("the dashboard needs a uid and a title")
	}
	exists := map[string]bool{}
	histograms := map[string]bool{}
	for _, m := range cosvolume.ServerMetrics {
		exists[m.Name] = true
		if m.Type == cosvolume.Histogram {
			histograms[m.Name] = true
		}
	}
	mounterOwn := map[string]bool{}
	for _, n := range mounter.MetricNames() {
		exists[n] = true
		mounterOwn[n] = true
	}
	used := map[string]bool{}
	queries := dashboardQueries(t, d, data)
	if len(queries) < 10 {
		t.Fatalf("only %d panels with queries", len(queries))
	}
	for where, exprs := range queries {
		for _, expr := range exprs {
			names := metricRE.FindAllString(expr, -1)
			if len(names) == 0 {
				t.Errorf("%s: %q names no cosmount metric", where, expr)
			}
			volumeMetric := false
			for _, n := range names {
				base := n
				for _, suffix := range []string{"_bucket", "_count", "_sum"} {
					if b, ok := strings.CutSuffix(n, suffix); ok && histograms[b] {
						base = b
					}
				}
				if !exists[base] {
					t.Errorf("%s: %q names %s, which no cosmount component serves", where, expr, n)
				}
				if histograms[n] {
					t.Errorf("%s: %q names the histogram %s without _bucket, _count or _sum", where, expr, n)
				}
				used[base] = true
				volumeMetric = volumeMetric || !mounterOwn[base]
			}
			if volumeMetric && !strings.HasPrefix(where, "variable ") && !strings.Contains(expr, `volume_id=~"$volume"`) {
				t.Errorf("%s: %q does not filter on the $volume variable", where, expr)
			}
		}
	}
	var unused []string
	for _, m := range cosvolume.ServerMetrics {
		if !used[m.Name] {
			unused = append(unused, m.Name)
		}
	}
	sort.Strings(unused)
	if len(unused) > 0 {
		t.Errorf("the dashboard shows none of %v", unused)
	}
}

// TestObservabilityDocListsEveryMetric: docs/observability.md names every
// metric a server serves and every metric of the mounter's own.
func TestObservabilityDocListsEveryMetric(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "observability.md"))
	if err != nil {
		t.Fatal(err)
	}
	names := mounter.MetricNames()
	for _, m := range cosvolume.ServerMetrics {
		names = append(names, m.Name)
	}
	for _, n := range names {
		if !strings.Contains(string(doc), "`"+n) {
			t.Errorf("docs/observability.md does not mention %s", n)
		}
	}
}
