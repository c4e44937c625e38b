package cos

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// attemptLog records what an AttemptObserver is told.
type attemptLog struct {
	countingObserver
	mu       sync.Mutex
	started  []string // op, with "+retry" for retries
	done     []string // op, with "!" for failures
	inFlight int64
	maxBody  int64
	minDur   time.Duration
}

func (l *attemptLog) AttemptStarted(op string, retry bool, body int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if retry {
		op += "+retry"
	}
	l.started = append(l.started, op)
	l.inFlight += body
	l.maxBody = max(l.maxBody, l.inFlight)
}

func (l *attemptLog) AttemptDone(op string, body int64, d time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		op += "!"
	}
	l.done = append(l.done, op)
	l.inFlight -= body
	if l.minDur == 0 || d < l.minDur {
		l.minDur = d
	}
}

// TestAttemptObserverSeesEveryAttempt: an SDK retry after a 500 and the
// retry with a fresh token after a 403 are each one more attempt, marked
// as a retry; the Observer still sees each operation once; body bytes are
// in flight only during their attempt; latency is measured.
func TestAttemptObserverSeesEveryAttempt(t *testing.T) {
	var puts, heads atomic.Int64
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, b []byte) {
		time.Sleep(2 * time.Millisecond)
		switch {
		case r.Method == http.MethodPut && puts.Add(1) == 1:
			ibmError(w, r, 500, "InternalError", "retry me", "r")
			return
		case r.Method == http.MethodHead && heads.Add(1) == 1:
			ibmError(w, r, http.StatusForbidden, "AccessDenied", "Access Denied", "r")
			return
		}
		okHandler(w, r, b)
	})
	obs := &attemptLog{}
	c := testClient(t, rec, func(o *Options) { o.Observer = obs })
	ctx := testContext(t)
	if _, err := c.PutObject(ctx, "b", "k", body("hello"), 5, PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.HeadObject(ctx, "b", "k"); err != nil {
		t.Fatal(err)
	}
	rc, _, err := c.GetObject(ctx, "b", "k", GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(rc)
	rc.Close()
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if got, want := strings.Join(obs.started, ","), "PutObject,PutObject+retry,HeadObject,HeadObject+retry,GetObject"; got != want {
		t.Errorf("attempts started %s, want %s", got, want)
	}
	if got, want := strings.Join(obs.done, ","), "PutObject!,PutObject,HeadObject!,HeadObject,GetObject"; got != want {
		t.Errorf("attempts done %s, want %s", got, want)
	}
	if obs.inFlight != 0 || obs.maxBody != 5 {
		t.Errorf("body bytes in flight %d at the end, at most %d; want 0 and 5", obs.inFlight, obs.maxBody)
	}
	if obs.minDur < 2*time.Millisecond {
		t.Errorf("shortest attempt %v, but the server takes 2ms for each", obs.minDur)
	}
	if strings.Join(obs.ops, ",") != "PutObject,HeadObject,GetObject" {
		t.Errorf("operations %v: each once, after its retries", obs.ops)
	}
}
