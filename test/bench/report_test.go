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
	cfg := &config{runs: 1, server: "emulator", seqSize: 1 << 30, smallFiles: 10, smallSize: 4096, lsObjects: 100, partSize: 8 << 20, concurrency: 4}
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

	md := markdown(cfg, map[string]string{}, r, []string{"sdk", "cosmount", "s3fs"})
	for _, want := range []string{
		"seq-write vs sdk: 0.50x (goal >= 0.9x): not met",
		"seq-write vs s3fs: 4.00x (goal >= 2.0x): MET; the SDK ceiling itself is 8.00x",
		"ls -l of 100 objects with list requests only (at most 2 others, for the directory's own lookup): not met",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}
