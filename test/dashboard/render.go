package dashboard

import (
	"fmt"
	"html"
	"math"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Page geometry: Grafana's 24-column grid, one grid row 30 px high.
const (
	pageWidth   = 1680
	pagePad     = 12
	gridRowPx   = 30
	headerPx    = 64
	panelGapPx  = 6
	legendPx    = 38
	axisLeftPx  = 62
	axisBelowPx = 20
)

// palette is a set of colours that stay apart on a dark background.
var palette = []string{"#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#f2495c", "#b877d9", "#8ab8ff", "#fade2a", "#96d98d", "#ff9830", "#ca95e5", "#ffa6b0"}

var namedColors = map[string]string{"green": "#73bf69", "red": "#f2495c", "orange": "#ff9830", "yellow": "#fade2a", "blue": "#5794f2"}

type page struct {
	html          string
	width, height int
}

// renderPage lays the panels out on the grid and draws them.
func renderPage(d *grafanaDashboard, panels []panelData, start, end time.Time) page {
	col := float64(pageWidth-2*pagePad) / 24
	bottom := 0
	for _, p := range panels {
		bottom = max(bottom, p.GridPos.Y+p.GridPos.H)
	}
	height := headerPx + bottom*gridRowPx + pagePad
	var b strings.Builder
	fmt.Fprintf(&b, `<!DOCTYPE html><html><head><meta charset="utf-8"><style>
body{margin:0;background:#111217;color:#ccccdc;font-family:"DejaVu Sans",Arial,sans-serif;width:%dpx;height:%dpx;overflow:hidden}
.hdr{position:absolute;left:%dpx;top:10px;right:%dpx;height:44px;display:flex;align-items:center;gap:18px}
.hdr h1{font-size:19px;font-weight:500;margin:0;color:#d8d9da}
.pill{font-size:12px;background:#22252b;border:1px solid #34373d;border-radius:2px;padding:4px 8px;color:#ccccdc}
.note{margin-left:auto;font-size:11px;color:#8e8e8e}
.panel{position:absolute;background:#181b1f;border:1px solid #25282d;border-radius:2px;box-sizing:border-box;overflow:hidden}
.title{font-size:12.5px;font-weight:500;color:#d8d9da;padding:6px 8px 0 8px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.row{position:absolute;font-size:14px;font-weight:500;color:#d8d9da;display:flex;align-items:center;gap:6px}
.legend{position:absolute;left:8px;right:6px;bottom:3px;height:%dpx;overflow:hidden;display:flex;flex-wrap:wrap;gap:0 12px;font-size:10.5px;color:#ccccdc;line-height:15px}
.legend span{white-space:nowrap}.sw{display:inline-block;width:12px;height:3px;margin-right:4px;vertical-align:middle;border-radius:1px}
.stat{position:absolute;left:0;right:0;top:26px;bottom:4px;display:flex;align-items:center;justify-content:center;font-weight:500}
svg text{font-family:"DejaVu Sans",Arial,sans-serif;font-size:10px;fill:#9fa0a4}
</style></head><body>`, pageWidth, height, pagePad, pagePad, legendPx)
	fmt.Fprintf(&b, `<div class="hdr"><h1>%s</h1><span class="pill">Data source: prometheus</span><span class="pill">Volume: All</span><span class="pill">%s to %s</span>`+
		`<span class="note">drawn by test/dashboard from a recorded run against the cosmount emulator, with Prometheus' query engine; not a Grafana screenshot</span></div>`,
		html.EscapeString(d.Title), start.UTC().Format("15:04:05"), end.UTC().Format("15:04:05 UTC"))
	for _, p := range panels {
		x := pagePad + int(math.Round(float64(p.GridPos.X)*col))
		w := int(math.Round(float64(p.GridPos.W)*col)) - panelGapPx
		y := headerPx + p.GridPos.Y*gridRowPx
		h := p.GridPos.H*gridRowPx - panelGapPx
		switch p.Type {
		case "row":
			fmt.Fprintf(&b, `<div class="row" style="left:%dpx;top:%dpx;width:%dpx;height:%dpx">&#9662; %s</div>`, x, y, w, h, html.EscapeString(p.Title))
		case "stat":
			fmt.Fprintf(&b, `<div class="panel" style="left:%dpx;top:%dpx;width:%dpx;height:%dpx"><div class="title">%s</div>%s</div>`,
				x, y, w, h, html.EscapeString(p.Title), statBody(p, h))
		default:
			fmt.Fprintf(&b, `<div class="panel" style="left:%dpx;top:%dpx;width:%dpx;height:%dpx"><div class="title">%s</div>%s</div>`,
				x, y, w, h, html.EscapeString(p.Title), timeSeriesBody(p, w, h, start, end))
		}
	}
	b.WriteString(`</body></html>`)
	return page{html: b.String(), width: pageWidth, height: height}
}

// statBody draws a stat panel's value in its threshold colour.
func statBody(p panelData, h int) string {
	if len(p.series) == 0 || len(p.series[0].values) == 0 || math.IsNaN(p.series[0].values[0]) {
		return `<div class="stat" style="font-size:22px;color:#8e8e8e">No data</div>`
	}
	v := p.series[0].values[0]
	color := "#73bf69"
	for _, step := range p.FieldConfig.Defaults.Thresholds.Steps {
		if step.Value == nil || v >= *step.Value {
			if c, ok := namedColors[step.Color]; ok {
				color = c
			} else if strings.HasPrefix(step.Color, "#") {
				color = step.Color
			}
		}
	}
	size := min(44, max(20, (h-40)/2))
	return fmt.Sprintf(`<div class="stat" style="font-size:%dpx;color:%s">%s</div>`, size, color, html.EscapeString(formatValue(v, p.FieldConfig.Defaults.Unit)))
}

// timeSeriesBody draws the lines of a time-series panel, its axes and its
// legend.
func timeSeriesBody(p panelData, w, h int, start, end time.Time) string {
	plotW := float64(w - axisLeftPx - 10)
	plotH := float64(h - 26 - legendPx - axisBelowPx - 4)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range p.series {
		for _, v := range s.values {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if math.IsInf(lo, 1) {
		return `<div class="stat" style="font-size:16px;color:#8e8e8e">No data</div>`
	}
	if p.FieldConfig.Defaults.Min != nil {
		lo = math.Min(lo, *p.FieldConfig.Defaults.Min)
	}
	if hi <= lo {
		hi = lo + 1
	}
	ticks := niceTicks(lo, hi, 4)
	lo, hi = math.Min(lo, ticks[0]), math.Max(hi, ticks[len(ticks)-1])
	span := end.Sub(start).Seconds()
	px := func(t time.Time) float64 { return axisLeftPx + t.Sub(start).Seconds()/span*plotW }
	py := func(v float64) float64 { return 4 + plotH - (v-lo)/(hi-lo)*plotH }
	var svg strings.Builder
	fmt.Fprintf(&svg, `<svg style="position:absolute;left:0;top:24px" width="%d" height="%.0f">`, w, plotH+axisBelowPx+8)
	for _, tv := range ticks {
		y := py(tv)
		fmt.Fprintf(&svg, `<line x1="%d" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#2c3036" stroke-width="1"/>`, axisLeftPx, axisLeftPx+plotW, y, y)
		fmt.Fprintf(&svg, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`, axisLeftPx-6, y+3.5, html.EscapeString(formatValue(tv, p.FieldConfig.Defaults.Unit)))
	}
	for i := 0; i <= 4; i++ {
		t := start.Add(time.Duration(float64(end.Sub(start)) * float64(i) / 4))
		x := px(t)
		anchor := "middle"
		if i == 4 {
			anchor = "end"
		}
		fmt.Fprintf(&svg, `<text x="%.1f" y="%.1f" text-anchor="%s">%s</text>`, x, plotH+axisBelowPx+1, anchor, t.UTC().Format("15:04:05"))
	}
	var legend strings.Builder
	for i, s := range p.series {
		color := palette[i%len(palette)]
		var path strings.Builder
		pen := false
		for j, v := range s.values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				pen = false
				continue
			}
			cmd := "L"
			if !pen {
				cmd = "M"
			}
			fmt.Fprintf(&path, "%s%.1f,%.1f ", cmd, px(s.times[j]), py(v))
			pen = true
		}
		if path.Len() > 0 {
			fmt.Fprintf(&svg, `<path d="%s" fill="none" stroke="%s" stroke-width="1.4" stroke-linejoin="round"/>`, path.String(), color)
		}
		fmt.Fprintf(&legend, `<span><i class="sw" style="background:%s"></i>%s</span>`, color, html.EscapeString(s.legend))
	}
	svg.WriteString(`</svg>`)
	return svg.String() + `<div class="legend">` + legend.String() + `</div>`
}

// niceTicks returns about n round values (1, 2 or 5 times a power of ten
// apart) that span [lo, hi].
func niceTicks(lo, hi float64, n int) []float64 {
	raw := (hi - lo) / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var out []float64
	for v := math.Floor(lo/step) * step; v <= hi+step*1e-9; v += step {
		out = append(out, v)
	}
	if len(out) < 2 {
		out = append(out, out[len(out)-1]+step)
	}
	return out
}

// formatValue writes v in a Grafana unit.
func formatValue(v float64, unit string) string {
	switch unit {
	case "s":
		switch a := math.Abs(v); {
		case a == 0:
			return "0 s"
		case a < 1e-3:
			return trim(v*1e6) + " µs"
		case a < 1:
			return trim(v*1e3) + " ms"
		default:
			return trim(v) + " s"
		}
	case "bytes", "Bps":
		suffix := ""
		if unit == "Bps" {
			suffix = "/s"
		}
		names := []string{"B", "KiB", "MiB", "GiB", "TiB"}
		i := 0
		for math.Abs(v) >= 1024 && i < len(names)-1 {
			v /= 1024
			i++
		}
		return trim(v) + " " + names[i] + suffix
	case "percentunit":
		return trim(v*100) + "%"
	case "reqps":
		return si(v) + " req/s"
	case "ops":
		return si(v) + " ops/s"
	}
	return si(v)
}

func si(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e9:
		return trim(v/1e9) + " G"
	case a >= 1e6:
		return trim(v/1e6) + " M"
	case a >= 1e3:
		return trim(v/1e3) + " K"
	}
	return trim(v)
}

// trim writes v with at most three significant digits.
func trim(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.1f", v), "0"), ".")
	default:
		return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
	}
}

// screenshot photographs the page with headless Chromium.
func screenshot(chromium, htmlPath, pngPath string, width, height int) error {
	if err := os.Remove(pngPath); err != nil && !os.IsNotExist(err) {
		return err
	}
	cmd := exec.Command(chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
		"--force-device-scale-factor=1", fmt.Sprintf("--window-size=%d,%d", width, height),
		"--screenshot="+pngPath, "file://"+htmlPath)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", chromium, err, out)
	}
	st, err := os.Stat(pngPath)
	if err != nil || st.Size() == 0 {
		return fmt.Errorf("%s wrote no screenshot: %v\n%s", chromium, err, out)
	}
	return nil
}
