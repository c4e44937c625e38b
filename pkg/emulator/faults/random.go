package faults

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Two more kinds, used by random faults (and by rules):
const (
	// ResetMidBody lets a request start and cuts its connection with a TCP
	// reset in the middle: after ResetAfter bytes of the request body when
	// the request has one (an upload), else after ResetAfter bytes of the
	// response body (a download). The client sees ECONNRESET mid-transfer.
	ResetMidBody Kind = "reset-mid-body"
	// Slow serves the request normally, after SlowDelay.
	Slow Kind = "slow"
)

// Random faults a fraction of all requests, each with a kind drawn from
// Kinds: the steady background of failures a soak test runs under.
type Random struct {
	// Rate is the probability in [0, 1] that a request is faulted.
	Rate float64 `json:"rate"`
	// Kinds to draw from, uniformly (list a kind twice to weigh it double);
	// empty means every kind.
	Kinds []Kind `json:"kinds,omitempty"`
	// ResetAfter is how many body bytes pass before a ResetMidBody reset
	// (default 64 KiB; a body shorter than that is reset at its end, before
	// the request completes).
	ResetAfter int64 `json:"resetAfter,omitempty"`
	// SlowDelay is the delay of a Slow fault (default 2s).
	SlowDelay time.Duration `json:"slowDelay,omitempty"`
	// Operations, if not empty, limits random faults to these operation names.
	Operations []string `json:"operations,omitempty"`
	// Seed makes the draws repeatable (0: random).
	Seed uint64 `json:"seed,omitempty"`
}

// AllKinds lists every fault kind.
var AllKinds = []Kind{InternalError, SlowDown, ServiceUnavailable, Reset, ResetMidBody, Slow}

const (
	defaultResetAfter = 64 << 10
	defaultSlowDelay  = 2 * time.Second
)

// randomState is an installed Random with its generator; guarded by Injector.mu.
type randomState struct {
	Random
	rng *rand.Rand
}

// SetRandom installs random faults (a Rate of 0 removes them).
func (i *Injector) SetRandom(r Random) error {
	if r.Rate < 0 || r.Rate > 1 {
		return fmt.Errorf("random fault rate %v: want a probability in [0, 1]", r.Rate)
	}
	for _, k := range r.Kinds {
		if _, err := ParseKind(string(k)); err != nil {
			return err
		}
	}
	if r.ResetAfter < 0 || r.SlowDelay < 0 {
		return errors.New("random faults: resetAfter and slowDelay must not be negative")
	}
	if len(r.Kinds) == 0 {
		r.Kinds = slices.Clone(AllKinds)
	}
	if r.ResetAfter == 0 {
		r.ResetAfter = defaultResetAfter
	}
	if r.SlowDelay == 0 {
		r.SlowDelay = defaultSlowDelay
	}
	seed := r.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if r.Rate == 0 {
		i.random = nil
		return nil
	}
	i.random = &randomState{Random: r, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	return nil
}

// drawLocked decides whether a random fault hits a request of operation op.
// Requires i.mu.
func (i *Injector) drawLocked(op string) Kind {
	r := i.random
	if r == nil || (len(r.Operations) > 0 && !slices.Contains(r.Operations, op)) {
		return ""
	}
	if r.rng.Float64() >= r.Rate {
		return ""
	}
	return r.Kinds[r.rng.IntN(len(r.Kinds))]
}

// Injected returns how many requests each kind of fault has answered since
// the injector was made (rules, unavailability and random faults alike).
func (i *Injector) Injected() map[Kind]int64 {
	i.mu.Lock()
	defer i.mu.Unlock()
	out := make(map[Kind]int64, len(i.injected))
	for k, n := range i.injected {
		out[k] = n
	}
	return out
}

// resetAfterBody serves the request but resets the connection after n body
// bytes: of the request body when there is one, else of the response body.
func resetAfterBody(w http.ResponseWriter, req *http.Request, n int64, next http.Handler) {
	rc := http.NewResponseController(w)
	if req.ContentLength != 0 && req.Body != nil && req.Body != http.NoBody {
		// Take part of the upload, then cut the connection while the client
		// is still sending.
		_, _ = io.CopyN(io.Discard, req.Body, n)
		hijackReset(rc)
		return
	}
	cw := &cutWriter{ResponseWriter: w, rc: rc, left: n}
	next.ServeHTTP(cw, req)
	// A body shorter than n is cut at its end all the same: the client
	// must not get a complete response.
	cw.reset()
}

var errCut = errors.New("faults: connection reset mid-body")

// cutWriter passes the first left bytes of a response body, then resets the
// connection; later writes fail, so the handler stops.
type cutWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	mu      sync.Mutex
	left    int64
	cut     bool
	started bool
}

func (c *cutWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		return 0, errCut
	}
	if !c.started {
		c.started = true
		// A body of known length no longer than left would arrive whole
		// before the reset: cut it in its middle instead.
		if cl, err := strconv.ParseInt(c.Header().Get("Content-Length"), 10, 64); err == nil && cl <= c.left {
			c.left = cl / 2
		}
	}
	if int64(len(p)) <= c.left {
		c.left -= int64(len(p))
		return c.ResponseWriter.Write(p)
	}
	n, _ := c.ResponseWriter.Write(p[:c.left])
	c.left = 0
	c.resetLocked()
	return n, errCut
}

func (c *cutWriter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resetLocked()
}

func (c *cutWriter) resetLocked() {
	if c.cut {
		return
	}
	c.cut = true
	_ = c.rc.Flush()
	hijackReset(c.rc)
}

// hijackReset takes over the connection and closes it with a TCP reset.
func hijackReset(rc *http.ResponseController) {
	conn, _, err := rc.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}
