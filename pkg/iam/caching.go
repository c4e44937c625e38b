package iam

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// ErrClosed is returned by a CachingSource after Close.
var ErrClosed = errors.New("iam: token source closed")

// Backoff configures retries of transient exchange failures.
type Backoff struct {
	// Initial is the delay before the second attempt; it doubles per attempt.
	Initial time.Duration
	// Max caps one delay, and is also how long a failed background refresh
	// waits before the next background attempt.
	Max time.Duration
	// MaxAttempts bounds the attempts of one exchange, the first included.
	MaxAttempts int
}

// DefaultBackoff is used for zero fields of CachingOptions.Backoff.
var DefaultBackoff = Backoff{Initial: 200 * time.Millisecond, Max: 5 * time.Second, MaxAttempts: 5}

// delay returns the jittered delay after the given failed attempt (1-based):
// uniformly in [d/2, d] where d = Initial*2^(attempt-1) capped at Max, so
// many clients that failed together do not retry together.
func (b Backoff) delay(attempt int) time.Duration {
	d := b.Initial
	for i := 1; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(d-half)+1))
}

// CachingOptions configures a CachingSource. Zero values mean the defaults.
type CachingOptions struct {
	// Now is the clock used for every expiry decision; nil means time.Now.
	Now func() time.Time
	// Backoff for transient failures; zero fields take DefaultBackoff's.
	Backoff Backoff
	// BackgroundTimeout bounds one background refresh, retries included;
	// zero means 2 minutes.
	BackgroundTimeout time.Duration
	// OnRefresh, if set, is called after every exchange the cache performs,
	// with its error (nil on success). It must not block for long.
	OnRefresh func(err error)
}

// CachingSource wraps a source that exchanges on every call (such as a
// TrustedProfileSource) and makes it cheap to call per request.
//
// Schedule, for a token of lifetime L (expiry minus the time the exchange
// started):
//   - until 80% of L has passed the cached token is handed out as is;
//   - after that, the first caller starts a background refresh and still gets
//     the cached token (IBM's clients refresh at expiration - 0.2*expires_in);
//   - within min(10s, L/10) of expiry callers wait for a fresh token. IBM's
//     clients use a flat 10 s; scaling it keeps a window for background
//     refresh, and leaves tokens usable, when L is only a few seconds.
//
// A token is never handed out at or past its expiry by the injected clock.
// Concurrent callers share one exchange in flight. Transient failures are
// retried with jittered exponential backoff, but never past the deadline of
// the callers waiting; other failures are returned at once and not cached.
type CachingSource struct {
	raw       Source
	changes   ChangeReporter // raw, if its credential can be replaced
	now       func() time.Time
	backoff   Backoff
	bgTimeout time.Duration
	onRefresh func(error)
	logValues []any

	ctx    context.Context // cancelled by Close; parent of every exchange
	cancel context.CancelFunc
	wg     sync.WaitGroup // exchange goroutines

	mu          sync.Mutex
	closed      bool
	cur         Token
	refreshAt   time.Time // start a background refresh from here on
	syncAt      time.Time // callers wait for a fresh token from here on
	bgNotBefore time.Time // after a failed background refresh
	flight      *flight   // the exchange in progress, if any
	invalidAt   time.Time // when a refusal last threw a token away
}

// invalidateInterval spaces the refusals that may throw the cached token
// away. COS answers 403 both to a revoked or expired token and to a
// request the identity may not make; without a bound, a pod looping on a
// forbidden write would drive one IAM exchange per write.
const invalidateInterval = 30 * time.Second

var (
	_ Source      = (*CachingSource)(nil)
	_ Invalidator = (*CachingSource)(nil)
)

// flight is one exchange (with its retries) shared by all callers waiting
// for it. The fields below done are written before done is closed and read
// only after; waiters, unbounded and deadline are guarded by CachingSource.mu.
type flight struct {
	ctx        context.Context
	cancel     context.CancelFunc
	background bool
	started    time.Time // by the injected clock; the token's lifetime counts from here
	done       chan struct{}
	tok        Token
	err        error

	waiters   int
	unbounded bool      // some waiter has no deadline
	deadline  time.Time // latest waiter deadline
	lastErr   error     // of the latest failed attempt, for waiters that give up
}

// NewCachingSource wraps raw. Call Close when done to stop background work.
func NewCachingSource(raw Source, opts CachingOptions) *CachingSource {
	b := opts.Backoff
	if b.Initial <= 0 {
		b.Initial = DefaultBackoff.Initial
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoff.Max
	}
	b.Max = max(b.Max, b.Initial)
	if b.MaxAttempts <= 0 {
		b.MaxAttempts = DefaultBackoff.MaxAttempts
	}
	c := &CachingSource{
		raw:       raw,
		now:       opts.Now,
		backoff:   b,
		bgTimeout: opts.BackgroundTimeout,
		onRefresh: opts.OnRefresh,
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.bgTimeout <= 0 {
		c.bgTimeout = 2 * time.Minute
	}
	if d, ok := raw.(interface{ LogValues() []any }); ok {
		c.logValues = d.LogValues()
	}
	if cr, ok := raw.(ChangeReporter); ok {
		c.changes = cr
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c
}

// Token returns a cached token that is valid now, exchanging first when
// there is none or it is about to expire.
func (c *CachingSource) Token(ctx context.Context) (Token, error) {
	if c.changes != nil && c.changes.CredentialsChanged() {
		// The credential was replaced (and the old one may be revoked
		// already): the next request must carry a token of the new one.
		c.mu.Lock()
		if c.cur.AccessToken != "" {
			klog.InfoS("IAM credential replaced: exchanging the new one", c.logValues...)
		}
		c.cur = Token{}
		c.mu.Unlock()
	}
	// A fresh token can only be invalid on arrival if the clock jumped while
	// the caller waited; try once more before giving up.
	for try := 0; try < 2; try++ {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return Token{}, ErrClosed
		}
		now := c.now()
		if c.cur.Valid(now) && now.Before(c.syncAt) {
			if !now.Before(c.refreshAt) && c.flight == nil && !now.Before(c.bgNotBefore) {
				c.startLocked(true)
			}
			tok := c.cur
			c.mu.Unlock()
			return tok, nil
		}
		f := c.flight
		if f == nil {
			f = c.startLocked(false)
		}
		f.waiters++
		if dl, ok := ctx.Deadline(); !ok {
			f.unbounded = true
		} else if dl.After(f.deadline) {
			f.deadline = dl
		}
		c.mu.Unlock()

		select {
		case <-f.done:
		case <-ctx.Done():
			if last := c.leave(f); last != nil {
				return Token{}, fmt.Errorf("iam: waiting for token exchange: %w (last attempt: %w)", ctx.Err(), last)
			}
			return Token{}, fmt.Errorf("iam: waiting for token exchange: %w", ctx.Err())
		}
		if f.err != nil {
			return Token{}, f.err
		}
		if f.tok.Valid(c.now()) {
			return f.tok, nil
		}
	}
	return Token{}, &Error{kind: ErrTransient, ErrorMessage: "exchanged token expired before it could be handed out"}
}

// Invalidate drops the cached token so that the next Token call exchanges.
// Prefer InvalidateToken when several requests may fail with the same token.
func (c *CachingSource) Invalidate() {
	c.mu.Lock()
	c.cur = Token{}
	c.mu.Unlock()
}

// InvalidateToken drops the cached token only if it is accessToken: when many
// requests are refused with one token, only the first forces an exchange and
// the others do not throw away the fresh token it brought.
func (c *CachingSource) InvalidateToken(accessToken string) {
	c.mu.Lock()
	if c.cur.AccessToken == accessToken && (c.invalidAt.IsZero() || c.now().Sub(c.invalidAt) >= invalidateInterval) {
		c.cur = Token{}
		c.invalidAt = c.now()
	}
	c.mu.Unlock()
}

// Close stops background refreshes, fails waiting callers and waits until
// every exchange goroutine has returned. Token returns ErrClosed afterwards.
func (c *CachingSource) Close() error {
	c.mu.Lock()
	c.closed = true
	c.cur = Token{}
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	return nil
}

// startLocked starts an exchange; c.mu must be held and c not closed.
func (c *CachingSource) startLocked(background bool) *flight {
	f := &flight{background: background, started: c.now(), done: make(chan struct{})}
	if background {
		f.ctx, f.cancel = context.WithTimeout(c.ctx, c.bgTimeout)
	} else {
		f.ctx, f.cancel = context.WithCancel(c.ctx)
	}
	c.flight = f
	c.wg.Add(1)
	go c.run(f)
	return f
}

// leave records that a waiter gave up. A foreground exchange nobody waits
// for any more is cancelled and detached, so the next caller starts afresh
// instead of joining a dying exchange. It returns the error of the latest
// failed attempt, if any, so the caller can say why it waited in vain.
func (c *CachingSource) leave(f *flight) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	f.waiters--
	if f.waiters == 0 && !f.background {
		f.cancel()
		if c.flight == f {
			c.flight = nil
		}
	}
	return f.lastErr
}

// allows reports whether a retry starting at the real time at still fits
// within the flight's own deadline and its waiters' deadlines.
func (c *CachingSource) allows(f *flight, at time.Time) bool {
	if dl, ok := f.ctx.Deadline(); ok && !at.Before(dl) {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return f.background || f.unbounded || at.Before(f.deadline)
}

func (c *CachingSource) run(f *flight) {
	defer c.wg.Done()
	var (
		tok Token
		err error
	)
	for attempt := 1; ; attempt++ {
		tok, err = c.raw.Token(f.ctx)
		if err == nil || !Retryable(err) || attempt >= c.backoff.MaxAttempts || f.ctx.Err() != nil {
			break
		}
		c.mu.Lock()
		f.lastErr = err
		c.mu.Unlock()
		// Honour a server's Retry-After, within reason: callers without a
		// deadline would otherwise wait as long as the server asks.
		d := max(c.backoff.delay(attempt), min(retryAfter(err), 4*c.backoff.Max))
		if !c.allows(f, time.Now().Add(d)) {
			break
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
			continue
		case <-f.ctx.Done():
			t.Stop()
		}
		break
	}
	c.finish(f, tok, err)
}

func (c *CachingSource) finish(f *flight, tok Token, err error) {
	c.mu.Lock()
	now := c.now()
	if err == nil && !tok.Valid(now) {
		err = &Error{kind: ErrUnexpected, ErrorMessage: "exchanged token is empty or already expired"}
	}
	var lifetime time.Duration
	if err == nil {
		lifetime = tok.Expiry.Sub(f.started)
		// An abandoned exchange may end after a newer one; keep the later token.
		if !c.cur.Valid(now) || tok.Expiry.After(c.cur.Expiry) {
			c.setLocked(tok, lifetime)
		}
	} else if f.background {
		c.bgNotBefore = now.Add(c.backoff.Max)
	}
	f.tok, f.err = tok, err
	if c.flight == f {
		c.flight = nil
	}
	closing := c.closed
	c.mu.Unlock()
	f.cancel()
	close(f.done)

	if closing {
		return
	}
	if err != nil {
		klog.ErrorS(err, "IAM token exchange failed", append([]any{"background", f.background}, c.logValues...)...)
	} else {
		klog.InfoS("IAM token refreshed", append([]any{"expiry", tok.Expiry.UTC(), "lifetime", lifetime,
			"background", f.background}, c.logValues...)...)
	}
	if c.onRefresh != nil {
		c.onRefresh(err)
	}
}

// setLocked caches tok and schedules its refresh; see CachingSource.
func (c *CachingSource) setLocked(tok Token, lifetime time.Duration) {
	if lifetime <= 0 {
		lifetime = tok.Expiry.Sub(c.now())
	}
	c.cur = tok
	c.refreshAt = tok.Expiry.Add(-lifetime / 5)
	c.syncAt = tok.Expiry.Add(-min(10*time.Second, lifetime/10))
	c.bgNotBefore = time.Time{}
}
