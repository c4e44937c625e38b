package e2e

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// A pod looping on writes its identity may not make (COS answers 403 to
// each upload) cannot grow the server's log, which every volume of a
// node shares in the mounter's container log, beyond the rate limit: 100,000
// denied writes leave at most the burst plus 20 lines a second.
func TestDeniedWriteLoopLeavesLogBounded(t *testing.T) {
	requireFUSE(t)
	// A COS that lets the mount look around and refuses every upload with
	// IBM's 403, as it does for an identity with the Reader role. A stand-in
	// rather than the emulator: the test is about what the server logs, and
	// 100,000 refusals should cost seconds, not the emulator's minutes of
	// token verification.
	var puts atomic.Int64
	cosSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPut:
			puts.Add(1)
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message><Resource>%s</Resource><RequestId>r</RequestId><httpStatusCode>403</httpStatusCode></Error>`, r.URL.Path)
		case r.Method == http.MethodGet && r.URL.Query().Get("list-type") == "2":
			w.Header().Set("Content-Type", "application/xml")
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>bucket</Name><Prefix></Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>`)
		case r.Method == http.MethodHead && strings.Count(strings.Trim(r.URL.Path, "/"), "/") == 0:
			w.WriteHeader(http.StatusOK) // the bucket exists
		default:
			w.WriteHeader(http.StatusNotFound) // no object
		}
	}))
	defer cosSrv.Close()
	creds := filepath.Join(t.TempDir(), "hmac")
	if err := os.WriteFile(creds, []byte("AKID:reader-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := startServer(t, []string{
		"--endpoint", cosSrv.URL, "--hmac-credentials-file", creds,
		// As under the mounter: the volume's name on every line, rate-limited.
		"--volume-id", "e2e-denied-loop",
		"-o", "temp_dir=" + t.TempDir(), "bucket",
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
			// A logger that fsyncs every line: each write is made durable
			// at once, and each is refused.
			f, err := os.Create(s.path(fmt.Sprintf("denied-%d.txt", w)))
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			for i := 0; i < writes/writers; i++ {
				if _, err := f.Write([]byte("x")); err != nil {
					errs <- fmt.Errorf("writer %d, write #%d: %v", w, i, err)
					return
				}
				if err := f.Sync(); !errors.Is(err, syscall.EACCES) {
					errs <- fmt.Errorf("writer %d, fsync #%d: %v, want EACCES", w, i, err)
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
	loop := time.Since(start)
	log := s.log()
	// The rate limiter's time runs until the log is read.
	elapsed := time.Since(start)
	lines := strings.Count(log, "\n")
	// The burst and 20 a second (notes of dropped lines included), plus
	// room for the start-up lines and for the limiter having started a
	// little before this test's clock.
	limit := 100 + 400 + int(20*elapsed.Seconds()+1)
	t.Logf("%d denied writes in %s; the server logged %d lines, %d bytes (limit %d lines)", denied.Load(), loop.Round(time.Millisecond), lines, len(log), limit)
	if lines > limit {
		t.Errorf("the server logged %d lines for %d denied writes in %s, more than %d", lines, writes, elapsed, limit)
	}
	if !strings.Contains(log, "log lines dropped") {
		t.Error("the log does not say that lines were dropped")
	}
	if strings.Contains(log, "reader-secret") {
		t.Error("the log holds the secret")
	}
	if n := puts.Load(); n < writes {
		t.Errorf("COS saw %d uploads for %d writes", n, writes)
	}
}
