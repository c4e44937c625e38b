package cosserver

import (
	"fmt"
	"sync"
	"testing"
)

// TestConcurrentCreateIfAbsent: of many PUTs with If-None-Match: * racing for
// one key exactly one wins, while unrelated requests proceed.
func TestConcurrentCreateIfAbsent(t *testing.T) {
	e := newEnv(t)
	const n = 8
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			statuses[i] = e.bearer(tokManager, "PUT", "/bkt/contended", []byte(fmt.Sprint(i)), "If-None-Match", "*").status
		}()
		go func() {
			defer wg.Done()
			r := e.signed(testKeyID, testSecret, "PUT", fmt.Sprintf("/bkt/free-%d", i), []byte("x"))
			if r.status != 200 {
				t.Errorf("independent put %d: %d", i, r.status)
			}
		}()
	}
	wg.Wait()
	won := 0
	for _, s := range statuses {
		switch s {
		case 200:
			won++
		case 412:
		default:
			t.Errorf("status %d", s)
		}
	}
	if won != 1 {
		t.Errorf("%d creators won, want 1 (%v)", won, statuses)
	}
}
