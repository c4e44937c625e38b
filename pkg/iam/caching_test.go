package iam

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fakeSource numbers its exchanges and lets each test decide their outcome.
type fakeSource struct {
	calls atomic.Int32
	fn    func(ctx context.Context, n int) (Token, error)
}

func (s *fakeSource) Token(ctx context.Context) (Token, error) {
	return s.fn(ctx, int(s.calls.Add(1)))
}

// lifetimeTokens hands out token "tok-<n>" valid for lifetime by clock.
func lifetimeTokens(clock *fakeClock, lifetime time.Duration) func(context.Context, int) (Token, error) {
	return func(_ context.Context, n int) (Token, error) {
		return Token{AccessToken: fmt.Sprintf("tok-%d", n), Expiry: clock.Now().Add(lifetime)}, nil
	}
}

var fastBackoff = Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxAttempts: 4}

func newTestCache(t *testing.T, raw Source, opts CachingOptions) *CachingSource {
	t.Helper()
	c := NewCachingSource(raw, opts)
	t.Cleanup(func() { closeWithin(t, c) })
	return c
}

// closeWithin fails the test if Close does not return, which would mean an
// exchange goroutine ignores cancellation.
func closeWithin(t *testing.T, c *CachingSource) {
	t.Helper()
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Errorf("Close did not return: an exchange goroutine leaked")
	}
}

func mustToken(t *testing.T, s Source) Token {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok, err := s.Token(ctx)
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	return tok
}

// eventually polls cond for up to 20 s; generous because the machine is shared.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCachingSchedule(t *testing.T) {
	const lifetime = time.Hour
	tests := []struct {
		name          string
		advance       time.Duration // after the first token
		wantExchanges int32         // right after the second Token call returned
		wantSameToken bool          // second call hands out the first token
		wantEventual  int32         // exchanges once background work settled
	}{
		{name: "fresh token is reused", advance: 30 * time.Minute, wantExchanges: 1, wantSameToken: true, wantEventual: 1},
		{name: "past 80% refreshes in the background", advance: 49 * time.Minute, wantExchanges: 1, wantSameToken: true, wantEventual: 2},
		{name: "within 10s of expiry waits for a new token", advance: lifetime - 5*time.Second, wantExchanges: 2, wantEventual: 2},
		{name: "expired token is replaced", advance: lifetime, wantExchanges: 2, wantEventual: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			release := make(chan struct{})
			var once sync.Once
			releaseAll := func() { once.Do(func() { close(release) }) }
			defer releaseAll()
			raw := &fakeSource{}
			raw.fn = func(ctx context.Context, n int) (Token, error) {
				if n == 2 && tt.wantSameToken {
					<-release // a background refresh must not hold up the caller
				}
				return lifetimeTokens(clock, lifetime)(ctx, n)
			}
			var refreshes atomic.Int32
			c := newTestCache(t, raw, CachingOptions{Now: clock.Now, OnRefresh: func(err error) {
				if err == nil {
					refreshes.Add(1)
				}
			}})
			first := mustToken(t, c)
			for range 5 {
				if tok := mustToken(t, c); tok != first {
					t.Fatalf("fresh token not reused")
				}
			}
			clock.Advance(tt.advance)
			second := mustToken(t, c)
			if got := raw.calls.Load(); got != tt.wantExchanges && !(tt.wantSameToken && got == tt.wantEventual) {
				t.Errorf("exchanges after second call = %d, want %d", got, tt.wantExchanges)
			}
			if (second == first) != tt.wantSameToken {
				t.Errorf("second token same as first = %v, want %v", second == first, tt.wantSameToken)
			}
			if !second.Valid(clock.Now()) {
				t.Errorf("handed out an expired token")
			}
			releaseAll()
			eventually(t, "refreshes to settle", func() bool { return refreshes.Load() == tt.wantEventual })
			if tt.wantEventual == 2 {
				if tok := mustToken(t, c); tok.AccessToken != "tok-2" {
					t.Errorf("after refresh got %s, want tok-2", tok.AccessToken)
				}
			}
			if got := raw.calls.Load(); got != tt.wantEventual {
				t.Errorf("exchanges = %d, want %d", got, tt.wantEventual)
			}
		})
	}
}

// TestCachingShortLifetimeMargin: with a 2 s lifetime the synchronous margin
// is 10% (0.2 s), not 10 s, so a fresh token is reused and usable.
func TestCachingShortLifetimeMargin(t *testing.T) {
	clock := newFakeClock()
	raw := &fakeSource{fn: lifetimeTokens(clock, 2*time.Second)}
	c := newTestCache(t, raw, CachingOptions{Now: clock.Now})
	first := mustToken(t, c)
	clock.Advance(time.Second)
	if tok := mustToken(t, c); tok != first || raw.calls.Load() != 1 {
		t.Fatalf("token with 1 s left of 2 s was not reused (exchanges %d)", raw.calls.Load())
	}
	clock.Advance(850 * time.Millisecond) // 0.15 s left: inside the margin
	if tok := mustToken(t, c); tok == first {
		t.Fatalf("token inside the 10%% margin was handed out")
	}
}

func TestCachingNeverHandsOutExpired(t *testing.T) {
	t.Run("exchange returns an expired token", func(t *testing.T) {
		clock := newFakeClock()
		raw := &fakeSource{fn: func(context.Context, int) (Token, error) {
			return Token{AccessToken: "stale", Expiry: clock.Now().Add(-time.Second)}, nil
		}}
		c := newTestCache(t, raw, CachingOptions{Now: clock.Now, Backoff: fastBackoff})
		tok, err := c.Token(context.Background())
		if !errors.Is(err, ErrUnexpected) || tok.AccessToken != "" {
			t.Fatalf("got %q, %v; want no token and ErrUnexpected", tok.AccessToken, err)
		}
	})
	t.Run("refresh fails near and after expiry", func(t *testing.T) {
		clock := newFakeClock()
		raw := &fakeSource{}
		raw.fn = func(ctx context.Context, n int) (Token, error) {
			if n == 1 {
				return lifetimeTokens(clock, time.Minute)(ctx, n)
			}
			return Token{}, &Error{kind: ErrBadCredentials, ErrorCode: "BXNIM0407E"}
		}
		c := newTestCache(t, raw, CachingOptions{Now: clock.Now, Backoff: fastBackoff})
		mustToken(t, c)
		for _, step := range []time.Duration{55 * time.Second, 5 * time.Second, time.Hour} {
			clock.Advance(step)
			tok, err := c.Token(context.Background())
			if !errors.Is(err, ErrBadCredentials) || tok.AccessToken != "" {
				t.Fatalf("after +%v got %q, %v; want no token and the exchange error", step, tok.AccessToken, err)
			}
		}
	})
}

func TestCachingInvalidate(t *testing.T) {
	clock := newFakeClock()
	raw := &fakeSource{fn: lifetimeTokens(clock, time.Hour)}
	c := newTestCache(t, raw, CachingOptions{Now: clock.Now})
	if mustToken(t, c).AccessToken != "tok-1" {
		t.Fatal("first token")
	}
	c.Invalidate()
	if tok := mustToken(t, c); tok.AccessToken != "tok-2" || raw.calls.Load() != 2 {
		t.Fatalf("Invalidate did not force an exchange: %s", tok.AccessToken)
	}
	c.InvalidateToken("tok-1") // a late 403 for the old token keeps the new one
	if tok := mustToken(t, c); tok.AccessToken != "tok-2" || raw.calls.Load() != 2 {
		t.Fatalf("InvalidateToken with a stale token dropped the current one")
	}
	c.InvalidateToken("tok-2")
	if tok := mustToken(t, c); tok.AccessToken != "tok-3" {
		t.Fatalf("InvalidateToken did not force an exchange: %s", tok.AccessToken)
	}
	// Refusals right after one another (a pod looping on a forbidden write)
	// cost one exchange per interval, not one each.
	for i := 0; i < 100; i++ {
		c.InvalidateToken("tok-3")
	}
	if tok := mustToken(t, c); tok.AccessToken != "tok-3" || raw.calls.Load() != 3 {
		t.Fatalf("repeated refusals within %v forced exchanges: %s after %d calls", invalidateInterval, tok.AccessToken, raw.calls.Load())
	}
	clock.Advance(invalidateInterval)
	c.InvalidateToken("tok-3")
	if tok := mustToken(t, c); tok.AccessToken != "tok-4" {
		t.Fatalf("a refusal after the interval did not force an exchange: %s", tok.AccessToken)
	}
	var _ Invalidator = c
}

func TestCachingRetries(t *testing.T) {
	transient := &Error{StatusCode: 503, kind: ErrTransient}
	rejected := &Error{StatusCode: 400, ErrorCode: "BXNIM0415E", kind: ErrBadCredentials}
	tests := []struct {
		name         string
		failures     int   // failing attempts before success
		failWith     error // error of failing attempts
		wantAttempts int32
		wantErr      error
	}{
		{name: "transient then success", failures: 2, failWith: transient, wantAttempts: 3},
		{name: "transient beyond max attempts", failures: 100, failWith: transient, wantAttempts: 4, wantErr: ErrTransient},
		{name: "400 not retried", failures: 100, failWith: rejected, wantAttempts: 1, wantErr: ErrBadCredentials},
		{name: "not eligible not retried", failures: 100, failWith: &Error{StatusCode: 400, ErrorCode: "BXNIM0398E", kind: ErrNotEligible}, wantAttempts: 1, wantErr: ErrNotEligible},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			raw := &fakeSource{}
			raw.fn = func(ctx context.Context, n int) (Token, error) {
				if n <= tt.failures {
					return Token{}, tt.failWith
				}
				return lifetimeTokens(clock, time.Hour)(ctx, n)
			}
			var failed atomic.Int32
			c := newTestCache(t, raw, CachingOptions{Now: clock.Now, Backoff: fastBackoff, OnRefresh: func(err error) {
				if err != nil {
					failed.Add(1)
				}
			}})
			_, err := c.Token(context.Background())
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got := raw.calls.Load(); got != tt.wantAttempts {
				t.Errorf("attempts = %d, want %d", got, tt.wantAttempts)
			}
			if tt.wantErr != nil {
				eventually(t, "OnRefresh to report the failure", func() bool { return failed.Load() == 1 })
			}
		})
	}
}

func TestCachingRetriesRespectDeadline(t *testing.T) {
	raw := &fakeSource{fn: func(context.Context, int) (Token, error) {
		return Token{}, &Error{StatusCode: 503, kind: ErrTransient}
	}}
	c := newTestCache(t, raw, CachingOptions{Backoff: Backoff{Initial: 100 * time.Millisecond, Max: 200 * time.Millisecond, MaxAttempts: 1000}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.Token(ctx)
	elapsed := time.Since(start)
	// Either the exchange gave up because no retry fitted before the deadline
	// or the deadline struck during an attempt; both name the IAM failure.
	if !errors.Is(err, ErrTransient) {
		t.Fatalf("err = %v, want the transient IAM failure", err)
	}
	if n := raw.calls.Load(); n < 2 || n > 25 {
		t.Errorf("attempts = %d, want retries bounded by the 1 s deadline", n)
	}
	if elapsed > 10*time.Second {
		t.Errorf("Token took %v with a 1 s deadline", elapsed)
	}
	// The exchange stops with its waiter: no attempts keep going afterwards.
	eventually(t, "exchange to stop", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.flight == nil
	})
	n := raw.calls.Load()
	time.Sleep(300 * time.Millisecond)
	if raw.calls.Load() != n {
		t.Errorf("attempts continued after the caller's deadline")
	}
}

func TestCachingSingleFlight(t *testing.T) {
	clock := newFakeClock()
	release := make(chan struct{})
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(release) }) }
	defer releaseAll() // also when the test fails early, so Close can return
	raw := &fakeSource{}
	raw.fn = func(ctx context.Context, n int) (Token, error) {
		<-release
		return lifetimeTokens(clock, time.Hour)(ctx, n)
	}
	c := newTestCache(t, raw, CachingOptions{Now: clock.Now})
	const callers = 50
	var wg sync.WaitGroup
	got := make([]Token, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() { got[i], errs[i] = c.Token(context.Background()) })
	}
	eventually(t, "all callers to wait on one exchange", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.flight != nil && c.flight.waiters == callers
	})
	releaseAll()
	wg.Wait()
	if n := raw.calls.Load(); n != 1 {
		t.Errorf("exchanges = %d, want 1", n)
	}
	for i := range callers {
		if errs[i] != nil || got[i].AccessToken != "tok-1" {
			t.Fatalf("caller %d got %q, %v", i, got[i].AccessToken, errs[i])
		}
	}
}

func TestCachingAbandonedExchangeIsCancelled(t *testing.T) {
	clock := newFakeClock()
	cancelled := make(chan struct{})
	raw := &fakeSource{}
	raw.fn = func(ctx context.Context, n int) (Token, error) {
		if n == 1 {
			<-ctx.Done()
			close(cancelled)
			return Token{}, &Error{kind: ErrTransient, err: ctx.Err()}
		}
		return lifetimeTokens(clock, time.Hour)(ctx, n)
	}
	c := newTestCache(t, raw, CachingOptions{Now: clock.Now})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Token(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	select {
	case <-cancelled:
	case <-time.After(20 * time.Second):
		t.Fatal("exchange kept running after its only caller left")
	}
	if tok := mustToken(t, c); tok.AccessToken != "tok-2" {
		t.Errorf("next caller got %q, want a new exchange", tok.AccessToken)
	}
}

func TestCachingCloseStopsBackgroundRefresh(t *testing.T) {
	clock := newFakeClock()
	stopped := make(chan struct{})
	raw := &fakeSource{}
	raw.fn = func(ctx context.Context, n int) (Token, error) {
		if n == 2 {
			<-ctx.Done()
			close(stopped)
			return Token{}, ctx.Err()
		}
		return lifetimeTokens(clock, time.Hour)(ctx, n)
	}
	c := NewCachingSource(raw, CachingOptions{Now: clock.Now})
	first := mustToken(t, c)
	clock.Advance(50 * time.Minute)
	if tok := mustToken(t, c); tok != first {
		t.Fatal("background window did not hand out the cached token")
	}
	eventually(t, "background refresh to start", func() bool { return raw.calls.Load() == 2 })
	closeWithin(t, c)
	select {
	case <-stopped:
	default:
		t.Fatal("Close returned before the background exchange stopped")
	}
	if _, err := c.Token(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Token after Close: err = %v, want ErrClosed", err)
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second, MaxAttempts: 10}
	for attempt, full := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond,
		4: 800 * time.Millisecond, 5: time.Second, 30: time.Second} {
		for range 50 {
			if d := b.delay(attempt); d < full/2 || d > full {
				t.Fatalf("delay(%d) = %v, want within [%v, %v]", attempt, d, full/2, full)
			}
		}
	}
}

// TestCachingThroughHTTP drives the real client: 5xx answers are retried
// (the server counts attempts), 400 is not.
func TestCachingThroughHTTP(t *testing.T) {
	tests := []struct {
		name         string
		failures     int
		failStatus   int
		wantAttempts int32
		wantErr      error
	}{
		{name: "502 twice then ok", failures: 2, failStatus: 502, wantAttempts: 3},
		{name: "400 once", failures: 100, failStatus: 400, wantAttempts: 1, wantErr: ErrBadCredentials},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var attempts atomic.Int32
			srv := newRawServer(t, func(w http.ResponseWriter, r *http.Request) {
				if int(attempts.Add(1)) <= tt.failures {
					iamError(tt.failStatus, "BXNIM0415E", "nope", "", "r")(w, r)
					return
				}
				okHandler(okBody)(w, r)
			})
			path := filepath.Join(t.TempDir(), "token")
			writeAtomic(t, path, testCRToken+"\n")
			src, err := NewTrustedProfileSource(TrustedProfileOptions{
				Exchanger: newTestClient(t, ClientOptions{BaseURL: srv.URL}), TokenFile: path, Profile: Profile{ID: "p"}})
			if err != nil {
				t.Fatal(err)
			}
			c := newTestCache(t, src, CachingOptions{Backoff: fastBackoff})
			_, err = c.Token(context.Background())
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			assertNoSecrets(t, err)
			if got := attempts.Load(); got != tt.wantAttempts {
				t.Errorf("server saw %d attempts, want %d", got, tt.wantAttempts)
			}
		})
	}
}

// TestCachingConcurrentShortLifetime: IAM hands out 2 s tokens and encodes
// each token's expiry in its text; 100 callers loop for ~5 s. The cache must
// exchange about once per lifetime and never hand out an expired token.
func TestCachingConcurrentShortLifetime(t *testing.T) {
	const lifetime = 2 * time.Second
	var exchanges atomic.Int32
	srv := newRawServer(t, func(w http.ResponseWriter, r *http.Request) {
		n := exchanges.Add(1)
		// expiration is whole seconds; rounding up keeps the lifetime >= 2 s.
		exp := time.Now().Add(lifetime + time.Second - 1).Unix()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"tok-%d-%d","token_type":"Bearer","expires_in":2,"expiration":%d}`, n, exp, exp)
	})
	src, err := NewAPIKeySource(newTestClient(t, ClientOptions{BaseURL: srv.URL}), testAPIKey)
	if err != nil {
		t.Fatal(err)
	}
	c := newTestCache(t, src, CachingOptions{})

	const callers = 100
	start := time.Now()
	stop := start.Add(5 * time.Second)
	var (
		wg      sync.WaitGroup
		calls   atomic.Int64
		mu      sync.Mutex
		badness []string
	)
	report := func(s string) {
		mu.Lock()
		if len(badness) < 10 {
			badness = append(badness, s)
		}
		mu.Unlock()
	}
	for range callers {
		wg.Go(func() {
			for time.Now().Before(stop) {
				before := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				tok, err := c.Token(ctx)
				cancel()
				calls.Add(1)
				if err != nil {
					report("error: " + err.Error())
					return
				}
				parts := strings.Split(tok.AccessToken, "-")
				exp, perr := strconv.ParseInt(parts[len(parts)-1], 10, 64)
				if len(parts) != 3 || perr != nil {
					report("malformed token")
					return
				}
				// The expiry the server encoded must lie after the moment the
				// call began (hand-out happens later still).
				if !time.Unix(exp, 0).After(before) {
					report(fmt.Sprintf("expired token %s handed out at %v", tok.AccessToken, before))
				}
				if !tok.Expiry.Equal(time.Unix(exp, 0)) {
					report("Token.Expiry differs from the encoded expiration")
				}
				time.Sleep(5 * time.Millisecond) // spare the shared CPUs
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, b := range badness {
		t.Error(b)
	}
	// Refreshes start at 80% of a >= 2 s lifetime: at most one per 1.6 s,
	// plus the first and one in flight at the end.
	bound := int32(elapsed/(lifetime*8/10)) + 2
	n := exchanges.Load()
	t.Logf("%d calls, %d exchanges in %v (bound %d)", calls.Load(), n, elapsed.Round(time.Millisecond), bound)
	if n > bound {
		t.Errorf("%d exchanges in %v, want at most %d", n, elapsed, bound)
	}
	if n < 2 {
		t.Errorf("%d exchanges in %v: tokens of 2-3 s were never refreshed", n, elapsed)
	}
}
