package mounter

import (
	"errors"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/mounterapi"
)

// probeResult is what one look at a target found.
type probeResult struct {
	state MountState
	usage *mounterapi.Usage // set when statfs answered
	err   error             // reading mountinfo failed
}

// prober looks at one target with at most one statfs in flight. statfs is
// the only call that reaches the server (the kernel answers stat of a mount
// root from its cache even after the server died); it blocks in the kernel
// while the server is alive but stuck, for as long as the server stays so.
// Such a call ties up a goroutine and an OS thread, so the prober never
// starts a second one: later probes wait for the same call (up to the
// timeout) and report Unresponsive meanwhile. Bounded threads, whatever the
// number of stats, health and publish calls against a stopped server.
type prober struct {
	target string

	mu       sync.Mutex
	inflight chan struct{} // guarded by mu; closed when the running statfs returns
	started  time.Time     // guarded by mu
	last     probeResult   // guarded by mu; result of the last finished statfs
}

// probe classifies the target, waiting at most timeout for the server.
func (p *prober) probe(timeout time.Duration) probeResult {
	mi, err := mountAt(p.target)
	if err != nil {
		return probeResult{state: NotMounted, err: err}
	}
	if mi == nil {
		// A dead FUSE mount is still listed; an absent entry really is unmounted.
		return probeResult{state: NotMounted}
	}
	if !mi.isFUSE() {
		return probeResult{state: Foreign}
	}
	p.mu.Lock()
	done := p.inflight
	if done == nil {
		done = make(chan struct{})
		p.inflight, p.started = done, time.Now()
		go p.statfs(done)
	}
	deadline := p.started.Add(timeout)
	p.mu.Unlock()
	wait := time.Until(deadline)
	if wait < 0 {
		wait = 0
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.last
	case <-timer.C:
		return probeResult{state: Unresponsive}
	}
}

func (p *prober) statfs(done chan struct{}) {
	var sfs unix.Statfs_t
	err := unix.Statfs(p.target, &sfs)
	res := probeResult{state: Healthy}
	if err != nil {
		// ENOTCONN is the usual answer of a mount whose server is gone;
		// right after the server was killed with requests in flight the
		// kernel may answer EIO instead. Either way nothing serves it.
		if !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.ECONNABORTED) {
			klog.V(2).InfoS("FUSE mount does not answer statfs", "target", p.target, "err", err)
		}
		res.state = Dead
	} else {
		bs := int64(sfs.Bsize)
		res.usage = &mounterapi.Usage{
			BytesTotal: int64(sfs.Blocks) * bs, BytesAvailable: int64(sfs.Bavail) * bs, BytesUsed: int64(sfs.Blocks-sfs.Bfree) * bs,
			InodesTotal: int64(sfs.Files), InodesAvailable: int64(sfs.Ffree), InodesUsed: int64(sfs.Files - sfs.Ffree),
		}
	}
	p.mu.Lock()
	p.last = res
	p.inflight = nil
	p.mu.Unlock()
	close(done)
}

// probers hands out one prober per target.
type probers struct {
	mu sync.Mutex
	m  map[string]*prober
}

func (ps *probers) get(target string) *prober {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.m == nil {
		ps.m = map[string]*prober{}
	}
	p, ok := ps.m[target]
	if !ok {
		p = &prober{target: target}
		ps.m[target] = p
	}
	return p
}

// forget drops target's prober once the target is unpublished. A statfs
// still stuck in it ends when the mount goes away.
func (ps *probers) forget(target string) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	delete(ps.m, target)
}
