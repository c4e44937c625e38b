package fs

import (
	"context"
	"testing"
	"time"
)

func TestBudget(t *testing.T) {
	b := newBudget(100)
	ctx := context.Background()
	if err := b.acquire(ctx, 60); err != nil {
		t.Fatal(err)
	}
	if b.tryAcquire(30, 20) {
		t.Error("tryAcquire ignored the reserve")
	}
	if !b.tryAcquire(20, 20) {
		t.Error("tryAcquire refused what fits")
	}
	got := make(chan error, 1)
	go func() { got <- b.acquire(ctx, 40) }()
	select {
	case err := <-got:
		t.Fatalf("acquire over the limit returned early: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	b.release(60)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := b.acquire(cctx, 100); err == nil {
		t.Error("acquire ignored a canceled context")
	}
	b.release(60)
	if used, high := b.stats(); used != 0 || high != 80 {
		t.Errorf("used %d high %d", used, high)
	}
}
