//go:build cluster

package cluster

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// The suite's parts and how long each took, printed as a table when the
// suite ends: `make e2e-cluster` says what it built and ran, and where the
// minutes went.
var timings struct {
	mu    sync.Mutex
	parts []timedPart
}

type timedPart struct {
	name string
	took time.Duration
	note string
}

// timed runs f as the part name, logs its start and end, and records how
// long it took; note (such as "cached") goes into the table.
func timed(name string, f func() (note string, err error)) error {
	logStep("%s ...", name)
	start := time.Now()
	note, err := f()
	took := time.Since(start)
	timings.mu.Lock()
	timings.parts = append(timings.parts, timedPart{name: name, took: took, note: note})
	timings.mu.Unlock()
	if err != nil {
		logStep("%s failed after %.1fs", name, took.Seconds())
		return err
	}
	if note != "" {
		logStep("%s done in %.1fs (%s)", name, took.Seconds(), note)
	} else {
		logStep("%s done in %.1fs", name, took.Seconds())
	}
	return nil
}

// printTimings writes the table of parts to stderr.
func printTimings() {
	timings.mu.Lock()
	defer timings.mu.Unlock()
	if len(timings.parts) == 0 {
		return
	}
	width := 0
	for _, p := range timings.parts {
		width = max(width, len(p.name))
	}
	var b strings.Builder
	var total time.Duration
	fmt.Fprintf(&b, "suite parts and their durations:\n")
	for _, p := range timings.parts {
		total += p.took
		fmt.Fprintf(&b, "  %-*s %8.1fs", width, p.name, p.took.Seconds())
		if p.note != "" {
			fmt.Fprintf(&b, "  (%s)", p.note)
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "  %-*s %8.1fs\n", width, "total", total.Seconds())
	fmt.Fprint(os.Stderr, b.String())
}
