package soak

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
)

// Phases of a run, for "I/O works again after the outage".
const (
	phaseBefore = iota
	phaseOutage // from the start of the IAM outage until a token lifetime after its end
	phaseAfter
)

// stats are the run's counters; every field is safe for concurrent use.
type stats struct {
	ops, failed  atomic.Int64
	bytesOK      atomic.Int64 // bytes of sessions that succeeded
	bytesTried   atomic.Int64
	okAfter      sync.Map // worker name -> *atomic.Int64: successes after the outage
	mu           sync.Mutex
	errnos       map[string]int64 // guarded by mu
	unexpected   []string         // guarded by mu: errors no fault explains
	phase        atomic.Int32
	sessionsByOp sync.Map // op -> *atomic.Int64
}

func newStats() *stats { return &stats{errnos: map[string]int64{}} }

func (s *stats) count(worker, op string, err error) {
	s.ops.Add(1)
	c, _ := s.sessionsByOp.LoadOrStore(op, new(atomic.Int64))
	c.(*atomic.Int64).Add(1)
	if err == nil {
		if s.phase.Load() == phaseAfter {
			c, _ := s.okAfter.LoadOrStore(worker, new(atomic.Int64))
			c.(*atomic.Int64).Add(1)
		}
		return
	}
	s.failed.Add(1)
	name := "other"
	var errno syscall.Errno
	if errors.As(err, &errno) {
		name = errno.Error()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errnos[name]++
	// Faults and an IAM outage are I/O errors (EIO); an upload that
	// continues an object the failure left changed may be ESTALE. EACCES
	// would say permissions are wrong, which nothing here makes them.
	if errno != syscall.EIO && errno != syscall.ESTALE {
		s.unexpected = append(s.unexpected, fmt.Sprintf("%s %s: %v", worker, op, err))
	}
}

// run is one soak run's shared state.
type run struct {
	mnt   string // mountpoint
	model *model
	stats *stats
	seed  atomic.Uint64
}

// fill writes deterministic pseudo-random bytes.
func fill(rng *rand.ChaCha8, b []byte) {
	_, _ = rng.Read(b)
}

func (r *run) rng() *rand.ChaCha8 {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], r.seed.Add(1))
	return rand.NewChaCha8(seed)
}

// session is one open, a series of writes (with an fsync every fsyncEvery
// bytes when positive) and close, on key. base is the content the writes
// continue (O_APPEND) or nil when the file starts empty. It updates the
// model and returns the content's hasher when every call succeeded.
func (r *run) session(worker, op, key string, flags int, base *hasher, n int64, chunk int, fsyncEvery int64) (*hasher, error) {
	path := filepath.Join(r.mnt, key)
	accepted := newHasher()
	if base != nil {
		accepted = base.clone()
	}
	attempted := accepted.clone()
	failures := []version{}
	if flags&os.O_TRUNC != 0 {
		failures = append(failures, newHasher().version()) // truncated, nothing written yet
	}
	fail := func(err error) (*hasher, error) {
		r.model.failed(key, append(failures, accepted.version(), attempted.version())...)
		r.stats.count(worker, op, err)
		r.stats.bytesTried.Add(attempted.size)
		return nil, err
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return fail(err)
	}
	rng := r.rng()
	buf := make([]byte, chunk)
	var firstErr error
	var sinceSync int64
	for done := int64(0); done < n && firstErr == nil; {
		b := buf[:min(int64(chunk), n-done)]
		fill(rng, b)
		attempted.Write(b)
		if n, err := f.Write(b); err != nil {
			// write(2) may take a prefix (whole FUSE writes of 128 KiB)
			// before the request that fails: the file holds that much.
			accepted.Write(b[:n])
			firstErr = err
			break
		}
		accepted.Write(b)
		done += int64(len(b))
		sinceSync += int64(len(b))
		if fsyncEvery > 0 && sinceSync >= fsyncEvery && done < n {
			sinceSync = 0
			if err := f.Sync(); err != nil {
				firstErr = err
				break
			}
			// Durable: whatever happens next, the bucket has at least this.
			r.model.succeeded(key, accepted.version())
			failures = failures[:0]
		}
	}
	cerr := f.Close()
	if firstErr == nil {
		firstErr = cerr
	}
	if firstErr != nil {
		// After a reported error a later successful close promises
		// nothing (POSIX); the file may hold what was accepted, what was
		// attempted, or what an fsync made durable (already allowed).
		return fail(firstErr)
	}
	r.model.succeeded(key, accepted.version())
	r.stats.count(worker, op, nil)
	r.stats.bytesOK.Add(accepted.size - sizeOf(base))
	r.stats.bytesTried.Add(accepted.size - sizeOf(base))
	return accepted, nil
}

func sizeOf(h *hasher) int64 {
	if h == nil {
		return 0
	}
	return h.size
}

// rename moves a key whose content is known; both names are uncertain
// after a failure (a directory-less rename is copy + delete).
func (r *run) rename(worker, from, to string) error {
	v, ok := r.model.known(from)
	if !ok {
		return nil
	}
	err := os.Rename(filepath.Join(r.mnt, from), filepath.Join(r.mnt, to))
	if err == nil {
		r.model.succeeded(from, absent)
		r.model.succeeded(to, v)
	} else {
		r.model.failed(from, absent, v)
		r.model.failed(to, absent, v)
	}
	r.stats.count(worker, "rename", err)
	return err
}

// remove unlinks a key.
func (r *run) remove(worker, key string) error {
	v, ok := r.model.known(key)
	if !ok {
		return nil
	}
	err := os.Remove(filepath.Join(r.mnt, key))
	if err == nil {
		r.model.succeeded(key, absent)
	} else {
		r.model.failed(key, absent, v)
	}
	r.stats.count(worker, "unlink", err)
	return err
}

// streamer writes big files sequentially, fsyncing every p.fsyncEvery,
// alternating between two names so the bucket stays bounded.
func (r *run) streamer(ctx context.Context, id int, p profile) {
	worker := fmt.Sprintf("streamer-%d", id)
	dir := fmt.Sprintf("stream-%d", id)
	for i := 0; ctx.Err() == nil; i++ {
		key := fmt.Sprintf("%s/file-%d", dir, i%2)
		_, _ = r.session(worker, "stream", key, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, nil, p.streamSize, 1<<20, p.fsyncEvery)
	}
}

// smallFiles creates many small files, and renames and deletes some. Once
// p.smallFiles exist it deletes one for each it creates.
func (r *run) smallFiles(ctx context.Context, p profile) {
	const worker = "small"
	rng := rand.New(rand.NewPCG(1, 2))
	var made []string
	for i := 0; ctx.Err() == nil; i++ {
		if len(made) >= p.smallFiles {
			j := rng.IntN(len(made))
			_ = r.remove(worker, made[j])
			made = append(made[:j], made[j+1:]...)
		}
		key := fmt.Sprintf("small/f-%06d", i)
		if _, err := r.session(worker, "create", key, os.O_CREATE|os.O_EXCL|os.O_WRONLY, nil, int64(rng.IntN(64<<10)), 16<<10, 0); err == nil {
			made = append(made, key)
		}
		switch {
		case i%5 == 4 && len(made) > 0:
			j := rng.IntN(len(made))
			to := fmt.Sprintf("small/r-%06d", i)
			if r.rename(worker, made[j], to) == nil {
				made[j] = to
			} else {
				made = append(made[:j], made[j+1:]...)
			}
		case i%7 == 6 && len(made) > 0:
			j := rng.IntN(len(made))
			_ = r.remove(worker, made[j])
			made = append(made[:j], made[j+1:]...)
		}
	}
}

// appender appends small chunks to files: a large one (its appends
// continue the object server-side) and a small one (read-modify-write).
// After a failure it moves to a new file: the old one's content is one of
// several versions, and appends must build on a known one.
func (r *run) appender(ctx context.Context, large bool, p profile) {
	worker, baseSize, prefix := "append-small", int64(10<<10), "append/small"
	if large {
		worker, baseSize, prefix = "append-large", 6<<20, "append/large"
	}
	rng := rand.New(rand.NewPCG(3, uint64(baseSize)))
	var cur *hasher
	var key string
	appends, file := 0, 0
	for ctx.Err() == nil {
		if cur == nil || appends >= p.appendsPerFile {
			file++
			key = fmt.Sprintf("%s-%03d", prefix, file)
			h, err := r.session(worker, "create", key, os.O_CREATE|os.O_EXCL|os.O_WRONLY, nil, baseSize, 1<<20, 0)
			cur, appends = h, 0
			if err != nil {
				continue
			}
		}
		cur, _ = r.session(worker, "append", key, os.O_WRONLY|os.O_APPEND, cur, int64(1+rng.IntN(64<<10)), 64<<10, 0)
		// cur is nil after a failure: a new file is started
		appends++
	}
}

// rewriter replaces whole files, below and above the multipart threshold.
func (r *run) rewriter(ctx context.Context, p profile) {
	const worker = "rewrite"
	rng := rand.New(rand.NewPCG(5, 6))
	for i := 0; ctx.Err() == nil; i++ {
		key := fmt.Sprintf("rewrite/w-%d", i%4)
		n := int64(1<<10 + rng.IntN(int(p.rewriteMax)))
		_, _ = r.session(worker, "rewrite", key, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, nil, n, 256<<10, 0)
	}
}
