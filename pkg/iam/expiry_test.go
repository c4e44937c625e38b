package iam

import (
	"context"
	"testing"
	"time"
)

func TestCachingSourceExpiry(t *testing.T) {
	clock := newFakeClock()
	raw := &fakeSource{fn: lifetimeTokens(clock, time.Hour)}
	c := NewCachingSource(raw, CachingOptions{Now: clock.Now, Backoff: fastBackoff})
	if got := c.Expiry(); !got.IsZero() {
		t.Errorf("Expiry before any token = %v", got)
	}
	if raw.calls.Load() != 0 {
		t.Error("Expiry exchanged a token")
	}
	tok, err := c.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Expiry(); !got.Equal(tok.Expiry) || !got.Equal(clock.Now().Add(time.Hour)) {
		t.Errorf("Expiry = %v, the token expires %v", got, tok.Expiry)
	}
	clock.Advance(50 * time.Minute) // past 80%: the next Token refreshes
	if _, err := c.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !c.Expiry().Equal(clock.Now().Add(time.Hour)) {
		if time.Now().After(deadline) {
			t.Fatalf("Expiry %v after the background refresh, want %v", c.Expiry(), clock.Now().Add(time.Hour))
		}
		time.Sleep(time.Millisecond)
	}
	closeWithin(t, c)
	if got := c.Expiry(); !got.IsZero() {
		t.Errorf("Expiry after Close = %v", got)
	}
}
