package fs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/fs/memstore"
)

// countingStore is the memory store with a count of GETs in flight (from
// the call until the body is closed) and, while a hold is set, GETs of
// ranges starting at or beyond it held until the hold moves past them.
type countingStore struct {
	*memstore.Store
	mu          sync.Mutex
	hold        int64         // guarded by mu; 0: no hold
	moved       chan struct{} // guarded by mu: closed when hold changes
	inflight    int           // guarded by mu
	maxInflight int           // guarded by mu
}

func (s *countingStore) Get(ctx context.Context, key string, o cos.GetOptions) (io.ReadCloser, cos.ObjectInfo, error) {
	s.mu.Lock()
	s.inflight++
	s.maxInflight = max(s.maxInflight, s.inflight)
	for s.hold > 0 && o.Offset >= s.hold-1 {
		moved := s.moved
		s.mu.Unlock()
		select {
		case <-moved:
		case <-ctx.Done():
			s.done()
			return nil, cos.ObjectInfo{}, ctx.Err()
		}
		s.mu.Lock()
	}
	s.mu.Unlock()
	rc, info, err := s.Store.Get(ctx, key, o)
	if err != nil {
		s.done()
		return nil, info, err
	}
	return &countedBody{ReadCloser: rc, s: s}, info, nil
}

func (s *countingStore) done() {
	s.mu.Lock()
	s.inflight--
	s.mu.Unlock()
}

// holdFrom holds the GETs of ranges starting at off or later (also those
// already waiting); release lets every GET through.
func (s *countingStore) holdFrom(off int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold = off + 1
	if s.moved != nil {
		close(s.moved)
	}
	s.moved = make(chan struct{})
}

func (s *countingStore) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold = 0
	if s.moved != nil {
		close(s.moved)
		s.moved = nil
	}
}

func (s *countingStore) stats() (inflight, maxInflight int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inflight, s.maxInflight
}

type countedBody struct {
	io.ReadCloser
	s    *countingStore
	once sync.Once
}

func (b *countedBody) Close() error {
	b.once.Do(b.s.done)
	return b.ReadCloser.Close()
}

// raFixture is a filesystem (not mounted) over a store holding one object.
type raFixture struct {
	store *countingStore
	fs    *FS
	data  []byte
	etag  string
}

func newRAFixture(t *testing.T, size int64, opts Options) *raFixture {
	t.Helper()
	store := &countingStore{Store: memstore.New()}
	data := make([]byte, size)
	fill(rand.NewChaCha8([32]byte{7}), data)
	info, err := store.Put(context.Background(), "obj", bytes.NewReader(data), size, cos.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if opts.TempDir == "" {
		opts.TempDir = t.TempDir()
	}
	fsys, err := New(store, opts)
	if err != nil {
		t.Fatal(err)
	}
	store.ResetCounts()
	return &raFixture{store: store, fs: fsys, data: data, etag: info.ETag}
}

// open returns a readahead that is closed at the end of the test.
func (x *raFixture) open(t *testing.T) *readahead {
	r := newReadahead(x.fs)
	t.Cleanup(r.close) // closing twice is harmless
	return r
}

// readAt reads n bytes at off through r and checks them against the object.
func (x *raFixture) readAt(t *testing.T, r *readahead, off, n int64) {
	t.Helper()
	b := make([]byte, n)
	got, err := r.read(context.Background(), "obj", x.etag, int64(len(x.data)), off, b)
	if err != nil {
		t.Fatalf("read %d@%d: %v", n, off, err)
	}
	want := x.data[min(off, int64(len(x.data))):min(off+n, int64(len(x.data)))]
	if !bytes.Equal(b[:got], want) {
		t.Fatalf("read %d@%d: wrong data (%d bytes, want %d)", n, off, got, len(want))
	}
}

// raOptions: 8 MiB parts, depth 8 (64 MiB of readahead), a roomy budget.
func raOptions() Options {
	o := testOptions()
	o.PartSize = 8 * MiB
	o.UploadConcurrency = 4
	o.ReadaheadMax = 64 * MiB
	o.MemoryLimit = 256 * MiB
	return o
}

// blockOrder returns the offsets of n blocks of bs bytes in the order of a
// pattern: in order, pairs swapped (two threads alternating), or shuffled
// within groups of 8 (the kernel's async reads racing).
func blockOrder(pattern string, n int, bs int64) []int64 {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	switch pattern {
	case "swapped pairs":
		for i := 0; i+1 < n; i += 2 {
			idx[i], idx[i+1] = idx[i+1], idx[i]
		}
	case "shuffled groups":
		rng := rand.New(rand.NewPCG(3, 4))
		for i := 0; i < n; i += 8 {
			g := idx[i:min(i+8, n)]
			rng.Shuffle(len(g), func(a, b int) { g[a], g[b] = g[b], g[a] })
		}
	}
	offs := make([]int64, n)
	for i, b := range idx {
		offs[i] = int64(b) * bs
	}
	return offs
}

func TestReadaheadSequentialIsOneGETPerPart(t *testing.T) {
	const bs = 128 * KiB
	for _, tc := range []struct {
		name    string
		size    int64
		pattern string
		gets    int64
	}{
		{"64 MiB in order", 64 * MiB, "in order", 8},
		{"64 MiB two threads alternating", 64 * MiB, "swapped pairs", 8},
		{"64 MiB async reordering", 64 * MiB, "shuffled groups", 8},
		{"64 MiB and a byte", 64*MiB + 1, "shuffled groups", 9},
		{"small file", 300 * KiB, "swapped pairs", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newRAFixture(t, tc.size, raOptions())
			r := x.open(t)
			n := int((tc.size + bs - 1) / bs)
			for _, off := range blockOrder(tc.pattern, n, bs) {
				x.readAt(t, r, off, bs)
			}
			if gets := x.store.Count(memstore.OpGet); gets != tc.gets {
				t.Errorf("%d GETs, want %d", gets, tc.gets)
			}
			if _, most := x.store.stats(); most > maxWindow(x.fs) {
				t.Errorf("%d GETs in flight at once, want at most %d", most, maxWindow(x.fs))
			}
			r.close()
			if used, high := x.fs.mem.stats(); used != 0 || high > x.fs.opts.MemoryLimit {
				t.Errorf("budget after close: used %d, high-water %d (limit %d)", used, high, x.fs.opts.MemoryLimit)
			}
		})
	}
}

// maxWindow is the most chunks one stream alone keeps in flight on fsys.
func maxWindow(fsys *FS) int {
	unit, ahead := (&readahead{fs: fsys}).limits()
	return int(ahead / unit)
}

// While reads wait for data, the window widens one chunk at a time up to
// ReadaheadMax: the store is slower than the application, so more GETs run
// in parallel.
func TestReadaheadWindowWidensWhileReadsWait(t *testing.T) {
	const part = 8 * MiB
	x := newRAFixture(t, 128*MiB, raOptions())
	depth := maxWindow(x.fs)
	r := x.open(t)
	x.store.holdFrom(part)
	for off := int64(0); off < part; off += 256 * KiB {
		x.readAt(t, r, off, 256*KiB) // the first part; the second is held
	}
	for p := int64(1); p < 16; p++ {
		// The read of part p waits for its GET: only then does the hold
		// move past it.
		waits := x.fs.readWaits.Load()
		go func() {
			for deadline := time.Now().Add(30 * time.Second); x.fs.readWaits.Load() == waits && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			x.store.holdFrom((p + 1) * part)
		}()
		x.readAt(t, r, p*part, 4096)
		if want := min(depth, startWindow+int(p)); r.window != want {
			t.Fatalf("window %d after %d waits, want %d", r.window, p, want)
		}
		for off := p*part + 4096; off < (p+1)*part; off += MiB {
			x.readAt(t, r, off, min(MiB, (p+1)*part-off))
		}
	}
	x.store.release()
	if gets := x.store.Count(memstore.OpGet); gets != 16 {
		t.Errorf("%d GETs for 16 parts", gets)
	}
	if _, most := x.store.stats(); most != depth {
		t.Errorf("at most %d GETs in flight, want %d", most, depth)
	}
}

// Where the store delivers faster than the application reads, a stream
// keeps startWindow chunks and gives blocks back as it passes them: it holds
// about two parts, not ReadaheadMax.
func TestReadaheadWindowStaysSmallWhileDataIsReady(t *testing.T) {
	const size = 128 * MiB
	x := newRAFixture(t, size, raOptions())
	r := x.open(t)
	for off := int64(0); off < size; off += 128 * KiB {
		// Let every GET finish before the next read: the data is always there.
		for _, c := range r.chunks {
			<-c.exited
		}
		x.readAt(t, r, off, 128*KiB)
	}
	if _, most := x.store.stats(); most > startWindow {
		t.Errorf("%d GETs in flight at once, want at most %d", most, startWindow)
	}
	if r.window != startWindow {
		t.Errorf("window %d, want %d", r.window, startWindow)
	}
	// Two chunks, the blocks within keepBehind of the head and the pool's
	// idle blocks (which hold their budget).
	limit := startWindow*x.fs.opts.PartSize + keepBehind + int64(2*x.fs.opts.PartSize)
	if _, high := x.fs.mem.stats(); high > limit {
		t.Errorf("high-water %d MiB, want at most %d MiB", high/MiB, limit/MiB)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestReadaheadRandomAndSeeks(t *testing.T) {
	const size = 100 * MiB
	x := newRAFixture(t, size, raOptions())
	r := x.open(t)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 300; i++ {
		off := rng.Int64N(size + KiB) // a few reads start past the end
		n := 1 + rng.IntN(int(2*MiB))
		if i%50 == 0 {
			// A sequential run from a random place, then the next seek.
			for k := 0; k < 40; k++ {
				x.readAt(t, r, off+int64(k)*256*KiB, 256*KiB)
			}
			continue
		}
		x.readAt(t, r, off, int64(n))
	}
	// A far seek drops the prefetch: afterwards only the seek window is held.
	for off := int64(0); off < 24*MiB; off += MiB {
		x.readAt(t, r, off, MiB)
	}
	for _, c := range r.chunks {
		<-c.exited // so that only the seek's GETs are counted below
	}
	before := x.store.Count(memstore.OpGet)
	x.readAt(t, r, 90*MiB, 4096)
	if gets := x.store.Count(memstore.OpGet) - before; gets != 1 {
		t.Errorf("a seek cost %d GETs, want 1", gets)
	}
	if used, _ := x.fs.mem.stats(); used-x.fs.bufs.idleBytes() != seekWindow {
		t.Errorf("after a seek %d bytes are buffered, want the seek window %d", used-x.fs.bufs.idleBytes(), seekWindow)
	}
}

func TestReadaheadConcurrentReaders(t *testing.T) {
	const size = 50 * MiB
	opts := raOptions()
	opts.PartSize = 5 * MiB
	opts.MemoryLimit = 40 * MiB // the reserve leaves 30 MiB: 6 parts for 4 readers
	x := newRAFixture(t, size, opts)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		r := x.open(t)
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 0))
			for off := int64(0); off < size; {
				n := 1 + rng.Int64N(300*KiB)
				b := make([]byte, n)
				got, err := r.read(context.Background(), "obj", x.etag, size, off, b)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(b[:got], x.data[off:min(off+n, size)]) {
					errs <- errors.New("wrong data")
					return
				}
				off += int64(got)
			}
		}(uint64(i))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if _, high := x.fs.mem.stats(); high > opts.MemoryLimit-x.fs.reserve() {
		t.Errorf("readahead high-water %d above the limit %d less the writers' reserve", high, opts.MemoryLimit)
	}
}

func TestReadaheadNeverWaitsForMemory(t *testing.T) {
	x := newRAFixture(t, 40*MiB, raOptions())
	// Someone else holds the whole budget: reads go straight to the store.
	if err := x.fs.mem.acquire(context.Background(), x.fs.opts.MemoryLimit); err != nil {
		t.Fatal(err)
	}
	r := x.open(t)
	for off := int64(0); off < 20*MiB; off += 512 * KiB {
		x.readAt(t, r, off, 512*KiB)
	}
	x.fs.mem.release(x.fs.opts.MemoryLimit)
	if used, _ := x.fs.mem.stats(); used != 0 {
		t.Errorf("%d bytes held by reads that had no memory", used)
	}
	// Once memory is back the same stream prefetches again: the parts
	// [20, 24), [24, 32) and [32, 40) MiB.
	before := x.store.Count(memstore.OpGet)
	x.readAt(t, r, 20*MiB, 4096)
	if used, _ := x.fs.mem.stats(); used == 0 {
		t.Error("no prefetch after memory came back")
	}
	for off := int64(20*MiB + 4096); off < 40*MiB; off += 512 * KiB {
		x.readAt(t, r, off, 512*KiB)
	}
	if gets := x.store.Count(memstore.OpGet) - before; gets != 3 {
		t.Errorf("%d GETs for the last 20 MiB, want 3", gets)
	}
}

func TestReadaheadReusesBuffers(t *testing.T) {
	const size = 128 * MiB
	opts := raOptions()
	opts.UploadConcurrency, opts.ReadaheadMax = 2, 16*MiB // depth 2
	x := newRAFixture(t, size, opts)
	r := x.open(t)
	b := make([]byte, MiB)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	for off := int64(0); off < size; off += MiB {
		if _, err := r.read(context.Background(), "obj", x.etag, size, off, b); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&ms)
	// A few part buffers; without reuse it would be the whole file.
	if alloc := int64(ms.TotalAlloc - before); alloc > size/2 {
		t.Errorf("reading %d MiB allocated %d MiB", size/MiB, alloc/MiB)
	}
	if x.fs.bufs.idleBytes() == 0 {
		t.Error("no buffer went back to the pool")
	}
	r.close()
	if used, _ := x.fs.mem.stats(); used != 0 || x.fs.bufs.idleBytes() != 0 {
		t.Errorf("after the last close: %d bytes used, %d idle", used, x.fs.bufs.idleBytes())
	}
}

func TestReadaheadFailedChunk(t *testing.T) {
	opts := raOptions()
	opts.UploadConcurrency, opts.ReadaheadMax = 2, 16*MiB // depth 2: not all prefetched
	x := newRAFixture(t, 40*MiB, opts)
	r := x.open(t)
	x.readAt(t, r, 0, 4096)

	// One failure is retried.
	var calls atomic.Int32
	x.store.SetFault(func(op memstore.Op, _ string) error {
		if op == memstore.OpGet && calls.Add(1) == 1 {
			return &cos.Error{Op: "GetObject", Kind: cos.ErrUnavailable}
		}
		return nil
	})
	for off := int64(4096); off < 20*MiB; off += MiB {
		x.readAt(t, r, off, MiB)
	}
	if calls.Load() < 2 {
		t.Fatal("the fault was not hit")
	}

	// A failure that persists is EIO; the state is not poisoned.
	unavailable := &cos.Error{Op: "GetObject", Kind: cos.ErrUnavailable}
	x.store.FailOp(memstore.OpGet, unavailable)
	var err error
	for off := int64(20 * MiB); off < 40*MiB && err == nil; off += MiB {
		_, err = r.read(context.Background(), "obj", x.etag, 40*MiB, off, make([]byte, MiB))
	}
	if !errors.Is(errno(err), syscall.EIO) {
		t.Fatalf("read while GETs fail: %v, want EIO", err)
	}
	x.store.SetFault(nil)
	for off := int64(20 * MiB); off < 40*MiB; off += MiB {
		x.readAt(t, r, off, MiB)
	}
}

func TestReadaheadStaleObject(t *testing.T) {
	x := newRAFixture(t, 40*MiB, raOptions())
	r := x.open(t)
	x.readAt(t, r, 0, 4096) // one read: only the first part is fetched
	// Replaced behind the mount: what was not fetched yet is ESTALE, never
	// bytes of the new version.
	if _, err := x.store.Put(context.Background(), "obj", bytes.NewReader(x.data[:100]), 100, cos.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := r.read(context.Background(), "obj", x.etag, 40*MiB, 39*MiB, make([]byte, 4096))
	if !errors.Is(errno(err), syscall.ESTALE) {
		t.Errorf("read of a replaced object: %v, want ESTALE", err)
	}
}

func TestReadaheadInterruptedReadKeepsPrefetch(t *testing.T) {
	x := newRAFixture(t, 40*MiB, raOptions())
	r := x.open(t)
	x.store.holdFrom(0)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := r.read(ctx, "obj", x.etag, 40*MiB, 0, make([]byte, 4096))
		errc <- err
	}()
	waitFor(t, "the first GET", func() bool { inflight, _ := x.store.stats(); return inflight == 1 })
	cancel() // the FUSE interrupt
	if err := <-errc; !errors.Is(errno(err), syscall.EINTR) {
		t.Fatalf("interrupted read: %v, want EINTR", err)
	}
	x.store.release()
	// The retry is served by the GET the interrupted read started: the
	// whole file still costs one GET per part.
	for off := int64(0); off < 40*MiB; off += 256 * KiB {
		x.readAt(t, r, off, 256*KiB)
	}
	if gets := x.store.Count(memstore.OpGet); gets != 5 {
		t.Errorf("%d GETs for 5 parts", gets)
	}
}

// The same through a mount: the kernel's async reads, two threads reading
// alternate blocks, and several descriptors at once.
func TestMountSequentialReadGETs(t *testing.T) {
	const size = 64 * MiB
	store := memstore.New()
	data := make([]byte, size)
	fill(rand.NewChaCha8([32]byte{8}), data)
	putObject(t, store, "seq", string(data), nil)
	putObject(t, store, "alt", string(data), nil)
	opts := raOptions()
	m, mnt := mountT(t, store, opts)

	t.Run("one reader", func(t *testing.T) {
		store.ResetCounts()
		f, err := openRaw(filepath.Join(mnt, "seq"), syscall.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		got, err := io.ReadAll(io.LimitReader(f, size+1))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read %d bytes (%v), data equal: %v", len(got), err, bytes.Equal(got, data))
		}
		// The lookup GETs the first 128 KiB (lookupGet); the parts
		// follow on from there, one GET each.
		if gets := store.Count(memstore.OpGet); gets != size/(8*MiB)+1 || store.Count(memstore.OpHead) != 0 {
			t.Errorf("%v for %d parts and the lookup", store.Counts(), size/(8*MiB))
		}
	})

	t.Run("two threads alternating", func(t *testing.T) {
		store.ResetCounts()
		f, err := openRaw(filepath.Join(mnt, "alt"), syscall.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		const bs = 256 * KiB
		got := make([]byte, size)
		errs := make([]error, 2)
		// Each round both threads read their block at once: reads reach
		// the server in either order, at most a block apart.
		for off := int64(0); off < size; off += 2 * bs {
			var wg sync.WaitGroup
			for k := int64(0); k < 2; k++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					o := off + k*bs
					if _, err := f.ReadAt(got[o:o+bs], o); err != nil && errs[k] == nil {
						errs[k] = err
					}
				}()
			}
			wg.Wait()
		}
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatal("wrong data")
		}
		if gets := store.Count(memstore.OpGet); gets != size/(8*MiB)+1 {
			t.Errorf("%d GETs for %d parts and the lookup: the stream restarted", gets, size/(8*MiB))
		}
	})

	t.Run("concurrent descriptors", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b, err := readFile(filepath.Join(mnt, []string{"seq", "alt"}[i%2]))
				if err == nil && !bytes.Equal(b, data) {
					err = errors.New("wrong data")
				}
				if err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	if _, high := m.FS().MemoryStats(); high > opts.MemoryLimit {
		t.Errorf("high-water %d above the limit %d", high, opts.MemoryLimit)
	}
}

// A read that arrives after its block was given back (more than keepBehind
// behind the head, still within nearWindow, so part of the stream) is
// served by a GET of its own: right bytes, no panic, no spinning on a
// block that holds nothing.
func TestReadaheadLateReadOfAGivenBackBlock(t *testing.T) {
	for _, cache := range []bool{false, true} {
		t.Run(map[bool]string{false: "no cache", true: "memory cache"}[cache], func(t *testing.T) {
			opts := raOptions()
			if cache {
				opts.CacheMemory = 64 * MiB
			}
			x := newRAFixture(t, 32*MiB, opts)
			r := x.open(t)
			for off := int64(0); off < 6*MiB; off += 128 * KiB {
				x.readAt(t, r, off, 128*KiB)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				x.readAt(t, r, 3*MiB+4096, 4096) // inside a given-back block
				x.readAt(t, r, 3*MiB, 128*KiB)   // at its start
				x.readAt(t, r, 3*MiB-64*KiB, 256*KiB)
			}()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("a late read of a given-back block did not return")
			}
		})
	}
}
