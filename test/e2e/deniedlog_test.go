package e2e

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

// A pod looping on writes its trusted profile may not make (COS answers
// 403 to each upload) cannot grow the server's log, which every volume of a
// node shares in the mounter's container log, beyond the rate limit: 100,000
// denied writes leave at most the burst plus 20 lines a second.
func TestDeniedWriteLoopLeavesLogBounded(t *testing.T) {
	requireFUSE(t)
	env := emulatortest.Start(t)
	// Profile-reader trusts namespace "readers" and may only read.
	token := env.WritePodToken(t, t.TempDir(), "readers", "default", "looper", time.Hour)
	s, err := startServer(t, []string{
		"--endpoint", env.COSURL, "--iam-endpoint", env.IAMURL,
		"--trusted-profile-id", emulatortest.ReaderProfileID, "--cr-token-file", token,
		// As under the mounter: the volume's name on every line, rate-limited.
		"--volume-id", "e2e-denied-loop",
		"-o", "temp_dir=" + t.TempDir(), env.Bucket,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Eight writers, as a pod's threads would, so that the loop takes
	// seconds rather than minutes; every write is refused.
	const writes, writers = 100000, 8
	start := time.Now()
	var denied atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			name := s.path(fmt.Sprintf("denied-%d.txt", w))
			for i := 0; i < writes/writers; i++ {
				err := os.WriteFile(name, []byte("x"), 0o644)
				if !errors.Is(err, syscall.EACCES) {
					errs <- fmt.Errorf("writer %d, write #%d: %v, want EACCES", w, i, err)
					return
				}
				denied.Add(1)
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	log := s.log()
	lines := strings.Count(log, "\n")
	// Startup lines, the burst, and 20 a second (notes of dropped lines
	// included).
	limit := 10 + 400 + int(20*elapsed.Seconds()+1)
	t.Logf("%d denied writes in %s; the server logged %d lines, %d bytes (limit %d lines)", denied.Load(), elapsed.Round(time.Millisecond), lines, len(log), limit)
	if lines > limit {
		t.Errorf("the server logged %d lines for %d denied writes in %s, more than %d", lines, writes, elapsed, limit)
	}
	if !strings.Contains(log, "log lines dropped") {
		t.Error("the log does not say that lines were dropped")
	}
	if raw, err := os.ReadFile(token); err != nil || strings.Contains(log, strings.TrimSpace(string(raw))) {
		t.Error("the log holds the pod's token")
	}
}
