package main

import (
	"math"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median(nil) is not NaN")
	}
}

func TestMedianSampleSkipsFailedRuns(t *testing.T) {
	runs := []sample{
		{Seconds: 2, Bytes: 100, Requests: map[string]int{"GetObject": 4}},
		{Error: "mount failed"},
		{Seconds: 4, Bytes: 100, Requests: map[string]int{"GetObject": 6, "HeadObject": 1}},
	}
	m, n, ok := medianSample(runs)
	if !ok || n != 2 {
		t.Fatalf("medianSample: ok=%v n=%d, want true 2", ok, n)
	}
	if m.Seconds != 3 || m.Requests["GetObject"] != 5 || m.Bytes != 100 {
		t.Errorf("medianSample = %+v", m)
	}
	if _, _, ok := medianSample([]sample{{Error: "x"}}); ok {
		t.Error("medianSample of only failed runs reports ok")
	}
}

func TestRatiosAndGoals(t *testing.T) {
	cfg := &config{runs: 1, server: "emulator", seqSize: 1 << 30, smallFiles: 10, smallSize: 4096, lsObjects: 100, partSize: 8 << 20, concurrency: 4,
		multiFiles: 8, multiSize: 128 << 20, bigWrite: 4 << 30}
	r := results{}
	r.add("seq-write", "sdk", sample{Seconds: 1, Bytes: 100 << 20})
	r.add("seq-write", "cosmount", sample{Seconds: 2, Bytes: 100 << 20})
	r.add("seq-write", "s3fs", sample{Seconds: 8, Bytes: 100 << 20})
	r.add("ls-l", "cosmount", sample{Seconds: 1, Files: 100, Requests: map[string]int{"ListObjectsV2": 1, "HeadObject": 100}})
	r.add("ls-l", "s3fs", sample{Seconds: 3, Files: 100})

	ps := phases(cfg)
	tests := []struct {
		phase, a, b string
		want        float64
	}{
		{"seq-write", "cosmount", "sdk", 0.5},
		{"seq-write", "cosmount", "s3fs", 4},
		{"ls-l", "cosmount", "s3fs", 3}, // faster ls is a higher ratio
	}
	for _, tt := range tests {
		got, ok := r.ratio(phaseByName(ps, tt.phase), tt.a, tt.b)
		if !ok || math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("ratio(%s, %s, %s) = %v %v, want %v", tt.phase, tt.a, tt.b, got, ok, tt.want)
		}
	}
	if _, ok := r.ratio(phaseByName(ps, "seq-write"), "cosmount", "rclone"); ok {
		t.Error("ratio against a tool without samples reports ok")
	}

	r.add("seq-read", "cosmount", sample{Seconds: 1, Bytes: 1 << 30, ClientCPU: 1.5, Requests: map[string]int{"GetObject": 128}})
	r.add("seq-read", "s3fs", sample{Seconds: 2, Bytes: 1 << 30, ClientCPU: 1})
	r.add("seq-read", "sdk", sample{Seconds: 1, Bytes: 1 << 30, ClientCPU: 1})
	r.add("reread-cache", "cosmount", sample{Seconds: 0.25, Bytes: 1 << 30, ClientCPU: 0.5, Requests: map[string]int{"HeadObject": 1}})
	r.add("multi-read", "cosmount", sample{Seconds: 1, Bytes: 1 << 30, PeakRSSMiB: 300, Requests: map[string]int{"GetObject": 300}})
	r.add("multi-read", "sdk", sample{Seconds: 1, Bytes: 1 << 30, Requests: map[string]int{"GetObject": 128}})

	md := markdown(cfg, map[string]string{}, r, []string{"sdk", "cosmount", "s3fs"})
	for _, want := range []string{
		"seq-write: cosmount / sdk >= 0.9x: 0.50 vs 0.90: not met: 44% short of the goal",
		"seq-read: cosmount / sdk >= 0.9x: 1.00 vs 0.90: MET",
		"seq-read: cosmount's CPU per GiB <= s3fs's: 1.50 vs 1.00 (s/GiB): not met: 50% over the goal",
		"ls-l: requests other than LIST (the directory's own lookup) <= 2: 100 vs 2.00 (HeadObject 100, ListObjectsV2 1): not met",
		"reread-cache: cosmount with its cache >= 3x its cold sequential read: 4.00 vs 3.00 (x): MET",
		"reread-cache: GETs of cosmount's second read with its cache = 0: 0.00 vs 0.00 (HeadObject 1): MET",
		"multi-read: cosmount's GETs <= 2x the SDK's: 300 vs 256 (SDK 128 GETs): not met: 17% over the goal",
		"multi-read: cosmount's peak RSS <= 256 MiB: 300 vs 256 (MiB): not met: 17% over the goal",
		"| sequential read 1 GiB (cold) | MiB/s · CPU s/GiB | 1024 · 1.00 | 1024 · 1.50 | 512 · 1.00 | 1.00x | 2.00x | – |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}
