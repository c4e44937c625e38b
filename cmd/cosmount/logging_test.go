package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// 100,000 lines in a few seconds leave a bounded log, and the reader is
// told how many were dropped.
func TestRateLimitedWriter(t *testing.T) {
	var out bytes.Buffer
	now := time.Unix(1700000000, 0)
	w := newRateLimitedWriter(&out, 20, 400, func() time.Time { return now })
	line := []byte("E1202 12:00:00.000000 1 file.go:1] \"operation failed\" volumeID=\"v\" op=\"write\" errno=\"permission denied\"\n")
	for i := 0; i < 100000; i++ {
		if n, err := w.Write(line); n != len(line) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		now = now.Add(50 * time.Microsecond) // 5 s in all
	}
	written := strings.Count(out.String(), "operation failed")
	// The burst, plus 20 a second for 5 seconds.
	if written < 400 || written > 400+20*5+1 {
		t.Errorf("%d lines passed, want about %d", written, 500)
	}
	if out.Len() > 100<<10 {
		t.Errorf("log grew to %d bytes", out.Len())
	}
	now = now.Add(time.Second)
	w.Write(line)
	if !strings.Contains(out.String(), "log lines dropped") {
		t.Error("no note of the dropped lines")
	}
}
