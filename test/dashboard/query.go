package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
)

// grafanaDashboard is what the renderer reads of a dashboard's JSON.
type grafanaDashboard struct {
	Title  string         `json:"title"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaPanel struct {
	ID          int    `json:"id"`
	Type        string `json:"type"`
	Title       string `json:"title"`
	Description string `json:"description"`
	GridPos     struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID        string `json:"refId"`
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
		Instant      bool   `json:"instant"`
	} `json:"targets"`
	FieldConfig struct {
		Defaults struct {
			Unit       string   `json:"unit"`
			Min        *float64 `json:"min"`
			Thresholds struct {
				Steps []struct {
					Color string   `json:"color"`
					Value *float64 `json:"value"`
				} `json:"steps"`
			} `json:"thresholds"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Panels []grafanaPanel `json:"panels"` // of a collapsed row
}

func loadDashboard(path string) (*grafanaDashboard, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d grafanaDashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &d, nil
}

// series is one line of a panel: its legend and its points.
type series struct {
	legend string
	times  []time.Time
	values []float64
}

// panelData is a panel with the result of its queries.
type panelData struct {
	grafanaPanel
	series []series
}

// Grafana's variables as the recording is queried: every volume, and a
// rate window that covers several scrapes (Grafana's $__rate_interval is
// four scrape intervals at least).
var variables = strings.NewReplacer(`$__rate_interval`, `30s`, `"$volume"`, `".*"`)

// evaluate runs every panel's queries over [start, end] with Prometheus'
// engine on the recording: range queries for time series, an instant
// query at end for stats.
func evaluate(d *grafanaDashboard, r *recorder, start, end time.Time, step time.Duration) ([]panelData, error) {
	defer r.close()
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 50_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	var out []panelData
	var flat []grafanaPanel
	for _, p := range d.Panels {
		flat = append(flat, p)
		flat = append(flat, p.Panels...)
	}
	for _, p := range flat {
		pd := panelData{grafanaPanel: p}
		for _, target := range p.Targets {
			expr := variables.Replace(target.Expr)
			var q promql.Query
			var err error
			if p.Type == "stat" || target.Instant {
				q, err = engine.NewInstantQuery(context.Background(), r.db, nil, expr, end)
			} else {
				q, err = engine.NewRangeQuery(context.Background(), r.db, nil, expr, start, end, step)
			}
			if err != nil {
				return nil, fmt.Errorf("panel %q: %s: %w", p.Title, expr, err)
			}
			res := q.Exec(context.Background())
			if res.Err != nil {
				q.Close()
				return nil, fmt.Errorf("panel %q: %s: %w", p.Title, expr, res.Err)
			}
			switch v := res.Value.(type) {
			case promql.Matrix:
				for _, s := range v {
					ser := series{legend: legend(target.LegendFormat, s.Metric)}
					for _, pt := range s.Floats {
						ser.times = append(ser.times, time.UnixMilli(pt.T))
						ser.values = append(ser.values, pt.F)
					}
					pd.series = append(pd.series, ser)
				}
			case promql.Vector:
				for _, s := range v {
					pd.series = append(pd.series, series{legend: legend(target.LegendFormat, s.Metric), times: []time.Time{end}, values: []float64{s.F}})
				}
			case promql.Scalar:
				pd.series = append(pd.series, series{legend: target.LegendFormat, times: []time.Time{end}, values: []float64{v.V}})
			}
			q.Close()
		}
		sort.SliceStable(pd.series, func(i, j int) bool { return pd.series[i].legend < pd.series[j].legend })
		out = append(out, pd)
	}
	return out, nil
}

var legendVar = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)

// legend fills a Grafana legend format ({{operation}}) from the series'
// labels; an empty format shows the labels, as Grafana does.
func legend(format string, l labels.Labels) string {
	if format == "" {
		return l.String()
	}
	return legendVar.ReplaceAllStringFunc(format, func(m string) string {
		return l.Get(legendVar.FindStringSubmatch(m)[1])
	})
}
