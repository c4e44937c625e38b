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
	size := fmt.Sprintf("%d MiB", cfg.seqSize>>20)
	if cfg.seqSize%(1<<30) == 0 {
		size = fmt.Sprintf("%d GiB", cfg.seqSize>>30)
	}
	return []phase{
		{"seq-write", "sequential write " + size + " (until in bucket)", "MiB/s", throughput, throughput},
		{"seq-read", "sequential read " + size + " (cold)", "MiB/s", throughput, throughput},
		{"small-write", fmt.Sprintf("write %d files of %d B (until in bucket)", cfg.smallFiles, cfg.smallSize), "files/s", filesPerSec, filesPerSec},
		{"small-read", fmt.Sprintf("read %d files of %d B (cold)", cfg.smallFiles, cfg.smallSize), "files/s", filesPerSec, filesPerSec},
		{"ls-l", fmt.Sprintf("ls -l of %d objects (cold mount)", cfg.lsObjects), "s", seconds, inverse},
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

// goal is one target from issue 3.
type goal struct {
	phase, other string
	min          float64
}

var goals = []goal{
	{"seq-write", "sdk", 0.9}, {"seq-write", "s3fs", 2}, {"seq-write", "rclone", 1.2},
	{"seq-read", "sdk", 0.9}, {"seq-read", "s3fs", 2}, {"seq-read", "rclone", 1.2},
	{"small-write", "s3fs", 3}, {"small-read", "s3fs", 3},
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
		fmt.Fprintf(&b, "| %s | %s |", p.label, p.unit)
		for _, t := range tools {
			v, _, ok := r.figure(p, t)
			if !ok {
				b.WriteString(" failed |")
				continue
			}
			fmt.Fprintf(&b, " %s |", fmtFigure(v))
		}
		for _, other := range []string{"sdk", "s3fs", "rclone"} {
			v, ok := r.ratio(p, "cosmount", other)
			fmt.Fprintf(&b, " %s |", fmtRatio(v, ok))
		}
		b.WriteString("\n")
	}
	b.WriteString("\nRatios compare speeds (for ls -l: the other tool's time over cosmount's).\n\n")

	b.WriteString("## Goals (issue 3)\n\n")
	for _, g := range goals {
		if r[g.phase] == nil {
			continue
		}
		v, ok := r.ratio(phaseByName(ps, g.phase), "cosmount", g.other)
		status := "no data"
		if ok {
			status = "MET"
			if v < g.min {
				status = "not met"
			}
		}
		ceiling := ""
		if g.other != "sdk" {
			if c, ok := r.ratio(phaseByName(ps, g.phase), "sdk", g.other); ok {
				ceiling = fmt.Sprintf("; the SDK ceiling itself is %s", fmtRatio(c, ok))
			}
		}
		fmt.Fprintf(&b, "- %s vs %s: %s (goal >= %.1fx): %s%s\n", g.phase, g.other, fmtRatio(v, ok), g.min, status, ceiling)
	}
	if m, _, ok := medianSample(r["ls-l"]["cosmount"]); ok && cfg.server == "emulator" {
		// The lookup of the listed directory itself may cost a request or
		// two; what must not happen is a request per entry.
		other := 0
		for op, n := range m.Requests {
			if op != "ListObjectsV2" {
				other += n
			}
		}
		status := "MET"
		if other > 2 {
			status = "not met"
		}
		fmt.Fprintf(&b, "- ls -l of %d objects with list requests only (at most 2 others, for the directory's own lookup): %s (%s)\n",
			cfg.lsObjects, status, fmtRequests(m.Requests))
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
