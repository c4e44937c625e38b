package fs

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/fs/memstore"
)

// fill writes deterministic pseudo-random bytes.
func fill(r *rand.ChaCha8, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
}

func TestStreamingWriteBoundedMemory(t *testing.T) {
	const total = 300 * MiB
	store := memstore.New()
	opts := testOptions()
	opts.PartSize = 8 * MiB
	opts.MultipartThreshold = 8 * MiB
	opts.UploadConcurrency = 3
	opts.MemoryLimit = 48 * MiB
	opts.ReadaheadMax = 16 * MiB
	m, mnt := mountT(t, store, opts)

	f, err := createRaw(filepath.Join(mnt, "big"))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{1})
	h := sha256.New()
	buf := make([]byte, MiB)
	for written := int64(0); written < total; written += int64(len(buf)) {
		fill(rng, buf)
		h.Write(buf)
		if _, err := f.Write(buf); err != nil {
			t.Fatalf("write at %d: %v", written, err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	want := h.Sum(nil)

	c := store.Counts()
	if c[memstore.OpPut] != 0 || c[memstore.OpCompleteMultipart] != 1 || c[memstore.OpUploadPart] < total/(8*MiB) {
		t.Errorf("not a streaming multipart upload: %v", c)
	}
	if store.PendingUploads() != 0 {
		t.Error("multipart upload left open")
	}
	body, info := object(t, store, "big")
	if got := sha256.Sum256([]byte(body)); !bytes.Equal(got[:], want) || info.Size != total {
		t.Fatalf("stored object differs (size %d)", info.Size)
	}
	_, high := m.FS().MemoryStats()
	if high > opts.MemoryLimit || high < opts.PartSize {
		t.Errorf("buffer high-water mark %d, want between one part and the limit %d", high, opts.MemoryLimit)
	}

	// Read back through the mount: readahead turns it into few, large GETs.
	store.ResetCounts()
	r, err := openRaw(filepath.Join(mnt, "big"), syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h.Reset()
	n, err := io.CopyBuffer(h, r, make([]byte, MiB))
	if err != nil || n != total {
		t.Fatalf("read back %d bytes: %v", n, err)
	}
	if !bytes.Equal(h.Sum(nil), want) {
		t.Fatal("read back differs")
	}
	if gets := store.Count(memstore.OpGet); gets > total/MiB {
		t.Errorf("sequential read of %d MiB took %d GETs; readahead is not growing", total/MiB, gets)
	}
	if _, high := m.FS().MemoryStats(); high > opts.MemoryLimit {
		t.Errorf("high-water mark %d above limit %d after reading", high, opts.MemoryLimit)
	}
}

func TestRandomReadsAndStaleObject(t *testing.T) {
	const size = 40 * MiB
	store := memstore.New()
	data := make([]byte, size)
	fill(rand.NewChaCha8([32]byte{2}), data)
	putObject(t, store, "obj", string(data), nil)
	// Before mounting: a name created behind the mount may stay invisible
	// for EntryTTL once the directory was listed.
	putObject(t, store, "obj2", string(data), nil)
	opts := testOptions()
	opts.ReadaheadMax = 8 * MiB
	_, mnt := mountT(t, store, opts)

	f, err := openRaw(filepath.Join(mnt, "obj"), syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		off := rng.Int64N(size)
		n := 1 + rng.IntN(300*1024)
		b := make([]byte, n)
		got, err := f.ReadAt(b, off)
		if err != nil && err != io.EOF {
			t.Fatalf("pread %d@%d: %v", n, off, err)
		}
		if !bytes.Equal(b[:got], data[off:off+int64(got)]) || (got < n && off+int64(got) != size) {
			t.Fatalf("pread %d@%d returned wrong data (%d bytes)", n, off, got)
		}
	}
	// The object is replaced behind the mount: reading data not fetched yet
	// fails with ESTALE instead of mixing two versions.
	g, err := openRaw(filepath.Join(mnt, "obj2"), syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	b := make([]byte, 4096)
	if _, err := g.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	putObject(t, store, "obj2", string(data[:size-1]), nil)
	_, err = g.ReadAt(b, 30*MiB)
	wantErrno(t, "read after the object changed", err, syscall.ESTALE)
}

func TestRandomWritesToNewFile(t *testing.T) {
	store := memstore.New()
	_, mnt := mountT(t, store, testOptions())
	f, err := createRaw(filepath.Join(mnt, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("end"), 6*MiB); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("start"), 0); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	if _, err := f.ReadAt(b, 0); err != nil || string(b) != "start" {
		t.Fatalf("read own write: %q %v", b, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	body, _ := object(t, store, "sparse")
	want := make([]byte, 6*MiB+3)
	copy(want, "start")
	copy(want[6*MiB:], "end")
	if body != string(want) {
		t.Errorf("sparse file stored wrong (%d bytes)", len(body))
	}
}

func TestStreamingUploadFailureIsReported(t *testing.T) {
	store := memstore.New()
	opts := testOptions()
	opts.PartSize, opts.MultipartThreshold = 5*MiB, 5*MiB
	_, mnt := mountT(t, store, opts)
	store.FailOp(memstore.OpUploadPart, &cos.Error{Op: "UploadPart", Kind: cos.ErrUnavailable})
	f, err := createRaw(filepath.Join(mnt, "big"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, MiB)
	var writeErr error
	for i := 0; i < 16 && writeErr == nil; i++ {
		_, writeErr = f.Write(buf)
	}
	closeErr := f.Close()
	if !errors.Is(writeErr, syscall.EIO) && !errors.Is(closeErr, syscall.EIO) {
		t.Errorf("failed parts not reported: write %v, close %v", writeErr, closeErr)
	}
	wantErrno(t, "close", closeErr, syscall.EIO)
	if store.PendingUploads() != 0 {
		t.Error("failed multipart upload was not aborted")
	}
	if _, _, ok := store.Object("big"); ok {
		t.Error("a failed upload produced an object")
	}
}

func TestReopenKeepsPageCacheWhileETagUnchanged(t *testing.T) {
	store := memstore.New()
	putObject(t, store, "f", string(bytes.Repeat([]byte("k"), int(3*MiB))), nil)
	_, mnt := mountT(t, store, testOptions())
	for i := 0; i < 2; i++ {
		store.ResetCounts()
		b, err := readFile(filepath.Join(mnt, "f"))
		if err != nil || int64(len(b)) != 3*MiB {
			t.Fatalf("read %d: %d bytes, %v", i, len(b), err)
		}
		gets := store.Count(memstore.OpGet)
		if i == 0 && gets == 0 {
			t.Fatal("first read did not reach the store")
		}
		if i == 1 && gets != 0 {
			t.Errorf("second open of an unchanged object fetched again (%d GETs): page cache dropped", gets)
		}
	}
}
