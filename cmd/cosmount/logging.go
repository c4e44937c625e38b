package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// Log lines a server may write, sustained and in a burst. A volume whose
// every request fails (say, a pod looping on a denied write) would
// otherwise log without bound into its mounter's log, which it shares with
// every other volume of the node.
const (
	logLinesPerSecond = 20
	logBurst          = 400
)

// rateLimitedWriter passes whole lines (each Write is one log line) through
// a token bucket and drops the rest, then says how many it dropped.
type rateLimitedWriter struct {
	out   io.Writer
	rate  float64
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	tokens  float64   // guarded by mu
	last    time.Time // guarded by mu
	dropped int       // guarded by mu
}

func newRateLimitedWriter(out io.Writer, perSecond, burst int, now func() time.Time) *rateLimitedWriter {
	return &rateLimitedWriter{out: out, rate: float64(perSecond), burst: float64(burst), tokens: float64(burst), now: now, last: now()}
}

func (w *rateLimitedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	w.tokens += now.Sub(w.last).Seconds() * w.rate
	if w.tokens > w.burst {
		w.tokens = w.burst
	}
	w.last = now
	// The note of dropped lines is a line too: under a sustained flood it
	// must not double what passes.
	need := 1.0
	if w.dropped > 0 {
		need = 2
	}
	if w.tokens < need {
		w.dropped++
		return len(p), nil
	}
	w.tokens -= need
	if w.dropped > 0 {
		fmt.Fprintf(w.out, "W%s cosmount: %d log lines dropped (at most %g a second)\n", now.UTC().Format("0102 15:04:05.000000"), w.dropped, w.rate)
		w.dropped = 0
	}
	// A write error (a full disk, a closed pipe) must never stop the server.
	_, _ = w.out.Write(p)
	return len(p), nil
}
