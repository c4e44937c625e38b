package driver

import "sync"

// inFlight remembers the operations in progress so that a duplicate call
// (kubelet or the provisioner retrying while the first call still runs) is
// answered Aborted instead of racing the first one.
type inFlight struct {
	mu  sync.Mutex
	ops map[string]struct{}
}

func newInFlight() *inFlight { return &inFlight{ops: map[string]struct{}{}} }

// tryAcquire marks key busy; it returns false if it already is.
func (f *inFlight) tryAcquire(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, busy := f.ops[key]; busy {
		return false
	}
	f.ops[key] = struct{}{}
	return true
}

func (f *inFlight) release(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ops, key)
}
