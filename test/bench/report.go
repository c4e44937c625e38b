package main

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
)

// sample is one measured phase of one tool in one run.
type sample struct {
	Seconds    float64 `json:"seconds"`
	Bytes      int64   `json:"bytes,omitempty"`
	Files      int     `json:"files,omitempty"`
	ServerCPU  float64 `json:"serverCPUSeconds"`
	ClientCPU  float64 `json:"clientCPUSeconds"`     // the FUSE server, or the benchmark process for the SDK
	PeakRSSMiB float64 `json:"peakRSSMiB,omitempty"` // FUSE server only (VmHWM of the mount process)
	// MinorFaults of the FUSE server (or the benchmark for the SDK): on a
	// VM each costs microseconds, so they explain CPU time.
	MinorFaults int64          `json:"minorFaults,omitempty"`
	Requests    map[string]int `json:"requests,omitempty"` // S3 requests by operation (emulator only)
	Error       string         `json:"error,omitempty"`    // the phase failed; no figures
}

// phase describes how a phase's samples become a figure of merit.
type phase struct {
	name  string
	label string
	unit  string
	// value is the figure shown; speed is "higher is better" for ratios.
	value func(sample) float64
	speed func(sample) float64
}

func throughput(s sample) float64  { return float64(s.Bytes) / (1 << 20) / s.Seconds }
func filesPerSec(s sample) float64 { return float64(s.Files) / s.Seconds }
func seconds(s sample) float64     { return s.Seconds }
func inverse(s sample) float64     { return 1 / s.Seconds }

func phases(cfg *config) []phase {
	size := fmtSize(cfg.seqSize)
	return []phase{
		{"seq-write", "sequential write " + size + " (until in bucket)", "MiB/s", throughput, throughput},
		{"seq-read", "sequential read " + size + " (cold)", "MiB/s", throughput, throughput},
		{"small-write", fmt.Sprintf("write %d files of %d B (until in bucket)", cfg.smallFiles, cfg.smallSize), "files/s", filesPerSec, filesPerSec},
		{"small-read", fmt.Sprintf("read %d files of %d B by name (cold mount)", cfg.smallFiles, cfg.smallSize), "files/s", filesPerSec, filesPerSec},
		{"ls-l", fmt.Sprintf("ls -l of %d objects (cold mount)", cfg.lsObjects), "s", seconds, inverse},
		{"reread", "second read of the " + size + " in the same mount, no read cache", "MiB/s", throughput, throughput},
		{"reread-cache", "second read of the " + size + ", each tool's read cache on (SDK: none)", "MiB/s", throughput, throughput},
		{"multi-read", fmt.Sprintf("%d readers of %d files of %s at once (cold; SDK: %d in flight)", cfg.multiFiles, cfg.multiFiles, fmtSize(cfg.multiSize), cfg.multiFiles), "MiB/s", throughput, throughput},
		{"big-write", "write " + fmtSize(cfg.bigWrite) + " (until in bucket)", "MiB/s", throughput, throughput},
	}
}

func fmtSize(n int64) string {
	if n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

// cpuPerUnit is the measured process's CPU per unit of work: seconds per
// GiB for phases that move bytes, milliseconds per file for file phases,
// seconds for ls -l.
func cpuPerUnit(p phase, s sample) (float64, string) {
	switch {
	case p.unit == "MiB/s" && s.Bytes > 0:
		return s.ClientCPU / (float64(s.Bytes) / (1 << 30)), "s/GiB"
	case p.unit == "files/s" && s.Files > 0:
		return s.ClientCPU * 1000 / float64(s.Files), "ms/file"
	default:
		return s.ClientCPU, "s"
	}
}

// results holds every sample: phase -> tool -> runs.
type results map[string]map[string][]sample

func (r results) add(phase, tool string, s sample) {
	if r[phase] == nil {
		r[phase] = map[string][]sample{}
	}
	r[phase][tool] = append(r[phase][tool], s)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// medianSample takes the median of each figure separately over the runs that
// succeeded; ok is false if none did.
func medianSample(runs []sample) (m sample, n int, ok bool) {
	var good []sample
	for _, s := range runs {
		if s.Error == "" {
			good = append(good, s)
		}
	}
	if len(good) == 0 {
		return sample{}, 0, false
	}
	pick := func(f func(sample) float64) float64 {
		v := make([]float64, len(good))
		for i, s := range good {
			v[i] = f(s)
		}
		return median(v)
	}
	m = sample{
		Seconds:    pick(func(s sample) float64 { return s.Seconds }),
		Bytes:      good[0].Bytes,
		Files:      good[0].Files,
		ServerCPU:  pick(func(s sample) float64 { return s.ServerCPU }),
		ClientCPU:  pick(func(s sample) float64 { return s.ClientCPU }),
		PeakRSSMiB: pick(func(s sample) float64 { return s.PeakRSSMiB }),
	}
	ops := map[string]bool{}
	for _, s := range good {
		for op := range s.Requests {
			ops[op] = true
		}
	}
	for op := range ops {
		m.Requests = orInit(m.Requests)
		m.Requests[op] = int(math.Round(pick(func(s sample) float64 { return float64(s.Requests[op]) })))
	}
	return m, len(good), true
}

func orInit(m map[string]int) map[string]int {
	if m == nil {
		return map[string]int{}
	}
	return m
}

// figure is the median figure of one tool in one phase.
func (r results) figure(p phase, tool string) (value, speed float64, ok bool) {
	m, _, ok := medianSample(r[p.name][tool])
	if !ok {
		return 0, 0, false
	}
	return p.value(m), p.speed(m), true
}

// ratio is cosmount's speed over another tool's, per phase.
func (r results) ratio(p phase, a, b string) (float64, bool) {
	_, sa, okA := r.figure(p, a)
	_, sb, okB := r.figure(p, b)
	if !okA || !okB || sb == 0 {
		return 0, false
	}
	return sa / sb, true
}

func fmtFigure(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func fmtRatio(v float64, ok bool) string {
	if !ok {
		return "–"
	}
	return fmt.Sprintf("%.2fx", v)
}

func fmtRequests(m map[string]int) string {
	if len(m) == 0 {
		return "–"
	}
	var parts []string
	for _, op := range slices.Sorted(maps.Keys(m)) {
		if m[op] != 0 {
			parts = append(parts, fmt.Sprintf("%s %d", op, m[op]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// target is one goal of issue 12, evaluated on the medians of a run.
type target struct {
	desc string
	// eval returns the measured value and the goal; higher says whether
	// the measured value must reach the goal (true) or stay below it.
	eval func(r results, cfg *config) (got, goal float64, higher bool, detail string, ok bool)
}

// ratioTarget: cosmount's speed in phase at least min times other's.
func ratioTarget(phaseName, other string, min float64) target {
	return target{
		desc: fmt.Sprintf("%s: cosmount / %s >= %.1fx", phaseName, other, min),
		eval: func(r results, cfg *config) (float64, float64, bool, string, bool) {
			v, ok := r.ratio(phaseByName(phases(cfg), phaseName), "cosmount", other)
			return v, min, true, "", ok
		},
	}
}

// cpuTarget: cosmount's CPU per GiB in phase at most that of other (a
// tool) or at most limit seconds (other "").
func cpuTarget(phaseName, other string, limit float64) target {
	desc := fmt.Sprintf("%s: cosmount's CPU per GiB <= %s's", phaseName, other)
	if other == "" {
		desc = fmt.Sprintf("%s: cosmount's CPU per GiB <= %.1f s", phaseName, limit)
	}
	return target{
		desc: desc,
		eval: func(r results, cfg *config) (float64, float64, bool, string, bool) {
			p := phaseByName(phases(cfg), phaseName)
			m, _, ok := medianSample(r[phaseName]["cosmount"])
			if !ok {
				return 0, 0, false, "", false
			}
			got, _ := cpuPerUnit(p, m)
			goal := limit
			if other != "" {
				o, _, ok := medianSample(r[phaseName][other])
				if !ok {
					return 0, 0, false, "", false
				}
				goal, _ = cpuPerUnit(p, o)
			}
			return got, goal, false, "s/GiB", true
		},
	}
}

var targets = []target{
	ratioTarget("seq-read", "sdk", 0.9),
	cpuTarget("seq-read", "s3fs", 0),
	ratioTarget("seq-write", "sdk", 0.9),
	cpuTarget("seq-write", "", 2),
	ratioTarget("small-write", "sdk", 0.8),
	ratioTarget("small-read", "sdk", 0.8),
	{
		desc: "ls-l: cosmount's time <= 1.3x the SDK's LIST-only time",
		eval: func(r results, cfg *config) (float64, float64, bool, string, bool) {
			c, _, ok1 := medianSample(r["ls-l"]["cosmount"])
			s, _, ok2 := medianSample(r["ls-l"]["sdk"])
			if !ok1 || !ok2 || s.Seconds == 0 {
				return 0, 0, false, "", false
			}
			return c.Seconds / s.Seconds, 1.3, false, "x", true
		},
	},
	{
		// The lookup of the listed directory itself may cost a request
		// or two; what must not happen is a request per entry.
		desc: "ls-l: requests other than LIST (the directory's own lookup) <= 2",
		eval: func(r results, cfg *config) (float64, float64, bool, string, bool) {
			m, _, ok := medianSample(r["ls-l"]["cosmount"])
			if !ok || cfg.server != "emulator" {
				return 0, 0, false, "", false
			}
			other := 0
			for op, n := range m.Requests {
				if op != "ListObjectsV2" {
					other += n
				}
			}
			return float64(other), 2, false, fmtRequests(m.Requests), true
		},
	},
	{
		desc: "small-read: GET+HEAD per file read by name on a cold mount <= 1 (2 more for the directory)",
		eval: func(r results, cfg *config) (float64, float64, bool, string, bool) {
			m, _, ok := medianSample(r["small-read"]["cosmount"])
			if !ok || cfg.server != "emulator" || m.Files == 0 {
				return 0, 0, false, "", false
			}
			n := float64(m.Requests["GetObject"] + m.Requests["HeadObject"])
			return n / float64(m.Files), 1 + 2/float64(m.Files), false, fmtRequests(m.Requests), true
		},
	},
	{
		desc: "reread-cache: cosmount with its cache >= 3x its cold sequential read",
		eval: func(r results, cfg *config) (float64, float64, bool, string, bool) {
			_, hot, ok1 := r.figure(phaseByName(phases(cfg), "reread-cache"), "cosmount")
			_, cold, ok2 := r.figure(phaseByName(phases(cfg), "seq-read"), "cosmount")
			if !ok1 || !ok2 || cold == 0 {
				return 0, 0, false, "", false
			}
			return hot / cold, 3, true, "x", true
		},
	},
	{
		desc: "reread-cache: GETs of cosmount's second read with its cache = 0",
		eval: func(r results, cfg *config) (float64, float64, bool, string, bool) {
			m, _, ok := medianSample(r["reread-cache"]["cosmount"])
			if !ok || cfg.server != "emulator" {
				return 0, 0, false, "", false
			}
			return float64(m.Requests["GetObject"]), 0, false, fmtRequests(m.Requests), true
		},
	},
	ratioTarget("multi-read", "sdk", 0.8),
	{
		desc: "multi-read: cosmount's GETs <= 2x the SDK's",
		eval: func(r results, cfg *config) (float64, float64, bool, string, bool) {
			c, _, ok1 := medianSample(r["multi-read"]["cosmount"])
			s, _, ok2 := medianSample(r["multi-read"]["sdk"])
			if !ok1 || !ok2 || cfg.server != "emulator" || s.Requests["GetObject"] == 0 {
				return 0, 0, false, "", false
			}
			return float64(c.Requests["GetObject"]), 2 * float64(s.Requests["GetObject"]), false,
				fmt.Sprintf("SDK %d GETs", s.Requests["GetObject"]), true
		},
	},
	rssTarget("multi-read", 256),
	rssTarget("big-write", 256),
}

// rssTarget: cosmount's peak RSS in phase at most limit MiB.
func rssTarget(phaseName string, limit float64) target {
	return target{
		desc: fmt.Sprintf("%s: cosmount's peak RSS <= %.0f MiB", phaseName, limit),
		eval: func(r results, cfg *config) (float64, float64, bool, string, bool) {
			m, _, ok := medianSample(r[phaseName]["cosmount"])
			return m.PeakRSSMiB, limit, false, "MiB", ok
		},
	}
}

// verdict says whether got meets goal, and by how much it misses.
func verdict(got, goal float64, higher bool) string {
	switch {
	case higher && got >= goal, !higher && got <= goal:
		return "MET"
	case higher:
		return fmt.Sprintf("not met: %.0f%% short of the goal", 100*(goal-got)/goal)
	case goal == 0:
		return "not met"
	default:
		return fmt.Sprintf("not met: %.0f%% over the goal", 100*(got-goal)/goal)
	}
}

// markdown renders the report.
func markdown(cfg *config, env map[string]string, r results, tools []string) string {
	var b strings.Builder
	ps := phases(cfg)
	fmt.Fprintf(&b, "# cosmount benchmark\n\n")
	fmt.Fprintf(&b, "Server: %s (separate process, data on disk). Runs: %d (medians). Part size %d MiB, concurrency %d for cosmount and the SDK; s3fs and rclone with their defaults.\n",
		cfg.server, cfg.runs, cfg.partSize>>20, cfg.concurrency)
	fmt.Fprintf(&b, "Versions: %s; %s; %s; cosmount %s. CPUs: %s (shared machine: expect noise).\n\n",
		env["s3fs"], env["rclone"], env["go"], env["cosmount"], env["cpus"])

	fmt.Fprintf(&b, "## Results (median of %d; higher is better except ls -l seconds)\n\n", cfg.runs)
	b.WriteString("Each cell: the figure, then the CPU the tool used for it (the FUSE server; the benchmark process for the SDK) per GiB, per file or in all.\n\n")
	b.WriteString("| phase | unit |")
	for _, t := range tools {
		fmt.Fprintf(&b, " %s |", t)
	}
	b.WriteString(" cosmount / SDK | cosmount / s3fs | cosmount / rclone |\n|---|---|")
	b.WriteString(strings.Repeat("---:|", len(tools)+3) + "\n")
	for _, p := range ps {
		if r[p.name] == nil {
			continue
		}
		cpuUnit := ""
		cells := make([]string, 0, len(tools))
		for _, t := range tools {
			m, _, ok := medianSample(r[p.name][t])
			if !ok {
				if r[p.name][t] == nil {
					cells = append(cells, "–")
				} else {
					cells = append(cells, "failed")
				}
				continue
			}
			cpu, unit := cpuPerUnit(p, m)
			cpuUnit = unit
			cells = append(cells, fmt.Sprintf("%s · %s", fmtFigure(p.value(m)), fmtFigure(cpu)))
		}
		fmt.Fprintf(&b, "| %s | %s · CPU %s |", p.label, p.unit, cpuUnit)
		for _, c := range cells {
			fmt.Fprintf(&b, " %s |", c)
		}
		for _, other := range []string{"sdk", "s3fs", "rclone"} {
			v, ok := r.ratio(p, "cosmount", other)
			fmt.Fprintf(&b, " %s |", fmtRatio(v, ok))
		}
		b.WriteString("\n")
	}
	b.WriteString("\nRatios compare speeds (for ls -l: the other tool's time over cosmount's).\n\n")

	b.WriteString("## Targets (issue 12)\n\n")
	for _, g := range targets {
		got, goal, higher, detail, ok := g.eval(r, cfg)
		if !ok {
			continue
		}
		if detail != "" {
			detail = " (" + detail + ")"
		}
		fmt.Fprintf(&b, "- %s: %s vs %s%s: %s\n", g.desc, fmtFigure(got), fmtFigure(goal), detail, verdict(got, goal, higher))
	}
	b.WriteString("\n## Cost per phase (medians)\n\n")
	b.WriteString("| phase | tool | seconds | server CPU s | client CPU s | client peak RSS MiB | S3 requests |\n|---|---|---:|---:|---:|---:|---|\n")
	for _, p := range ps {
		for _, t := range tools {
			runs := r[p.name][t]
			if runs == nil {
				continue
			}
			m, n, ok := medianSample(runs)
			if !ok {
				fmt.Fprintf(&b, "| %s | %s | failed: %s | | | | |\n", p.name, t, runs[0].Error)
				continue
			}
			rss := "–"
			if m.PeakRSSMiB > 0 {
				rss = fmt.Sprintf("%.0f", m.PeakRSSMiB)
			}
			note := ""
			if n < len(runs) {
				note = fmt.Sprintf(" (%d of %d runs failed)", len(runs)-n, len(runs))
			}
			fmt.Fprintf(&b, "| %s | %s%s | %.2f | %.2f | %.2f | %s | %s |\n",
				p.name, t, note, m.Seconds, m.ServerCPU, m.ClientCPU, rss, fmtRequests(m.Requests))
		}
	}
	b.WriteString("\nClient CPU and peak RSS are those of the FUSE server process (for the SDK: the benchmark process's CPU; its RSS is not meaningful).\n")
	b.WriteString("Every FUSE tool is mounted fresh for each phase; page caches are dropped between write and read.\n")
	return b.String()
}

func phaseByName(ps []phase, name string) phase {
	for _, p := range ps {
		if p.name == name {
			return p
		}
	}
	return phase{}
}
