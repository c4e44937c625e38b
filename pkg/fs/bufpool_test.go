package fs

import (
	"bytes"
	"context"
	"runtime"
	"testing"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/fs/memstore"
)

func TestBufPoolKeepsBudgetWhileUsed(t *testing.T) {
	mem := newBudget(16 * MiB)
	p := newBufPool(mem, MiB, 2)
	p.open()
	// A caller pays for its buffers, then gives them back.
	var bufs [][]byte
	for i := 0; i < 3; i++ {
		if !mem.tryAcquire(MiB, 0) {
			t.Fatal("budget refused 1 MiB")
		}
		bufs = append(bufs, p.get())
	}
	for _, b := range bufs {
		p.put(b)
	}
	// Two stay idle (holding their budget), the third is returned.
	if used, _ := mem.stats(); used != 2*MiB || p.idleBytes() != 2*MiB {
		t.Errorf("after put: used %d, idle %d; want 2 MiB each", used, p.idleBytes())
	}
	// get of an idle buffer with a fresh reservation returns the reservation.
	if !mem.tryAcquire(MiB, 0) {
		t.Fatal("budget refused 1 MiB")
	}
	b := p.get()
	if used, _ := mem.stats(); used != 2*MiB || p.idleBytes() != MiB {
		t.Errorf("after get: used %d, idle %d", used, p.idleBytes())
	}
	// take moves an idle buffer's budget to the caller.
	if p.take() == nil {
		t.Fatal("take found no idle buffer")
	}
	if used, _ := mem.stats(); used != 2*MiB || p.idleBytes() != 0 {
		t.Errorf("after take: used %d, idle %d", used, p.idleBytes())
	}
	p.put(b)
	if !mem.tryAcquire(MiB, 0) {
		t.Fatal("budget refused 1 MiB")
	}
	p.put(make([]byte, MiB)) // two idle again
	// shrink frees idle buffers for a caller that needs their budget.
	p.shrink(1)
	if p.idleBytes() != MiB {
		t.Errorf("after shrink(1): idle %d, want 1 MiB", p.idleBytes())
	}
	p.put(make([]byte, 100)) // another size only returns its budget
	p.close()
	if used, _ := mem.stats(); used != MiB-100 {
		// The taken buffer (1 MiB) is still out; 100 bytes were never
		// acquired, so the budget's floor at zero is not reached.
		t.Errorf("after the last close: used %d, want %d", used, MiB-100)
	}
}

// A streaming upload fills the part buffers its uploaded parts give back
// instead of allocating one per part.
func TestStreamingUploadReusesPartBuffers(t *testing.T) {
	const parts = 24
	store := memstore.New()
	opts := testOptions()
	opts.TempDir = t.TempDir()
	fsys, err := New(store, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := fsys.startStream(ctx, "big", cos.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("0123456789abcdef"), int(128*KiB/16))
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	for off := int64(0); off < parts*opts.PartSize; off += int64(len(chunk)) {
		if err := s.write(ctx, chunk); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&ms)
	// The memory store copies every part (parts*PartSize); the upload
	// itself allocates UploadConcurrency+1 part buffers, not one per part.
	if alloc := int64(ms.TotalAlloc - before); alloc > parts*opts.PartSize*3/2 {
		t.Errorf("streaming %d parts allocated %d MiB", parts, alloc/MiB)
	}
	if _, err := s.finish(ctx); err != nil {
		t.Fatal(err)
	}
	if used, _ := fsys.mem.stats(); used != 0 || fsys.parts.idleBytes() != 0 {
		t.Errorf("after the upload: %d bytes used, %d idle", used, fsys.parts.idleBytes())
	}
	if b, _, ok := store.Object("big"); !ok || int64(len(b)) != parts*opts.PartSize {
		t.Errorf("object of %d bytes, want %d", len(b), parts*opts.PartSize)
	}
}
