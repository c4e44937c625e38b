package fs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/fs/memstore"
)

// wireCounter counts the payload bytes that would cross the network:
// uploaded by PUT and UploadPart, downloaded by GET. Server-side copies
// move nothing.
type wireCounter struct {
	ObjectStore
	up, down atomic.Int64
}

func (w *wireCounter) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, o cos.PutOptions) (cos.ObjectInfo, error) {
	w.up.Add(size)
	return w.ObjectStore.Put(ctx, key, body, size, o)
}

func (w *wireCounter) UploadPart(ctx context.Context, key, id string, part int32, body io.ReadSeeker, size int64) (cos.CompletedPart, error) {
	w.up.Add(size)
	return w.ObjectStore.UploadPart(ctx, key, id, part, body, size)
}

func (w *wireCounter) Get(ctx context.Context, key string, o cos.GetOptions) (io.ReadCloser, cos.ObjectInfo, error) {
	rc, info, err := w.ObjectStore.Get(ctx, key, o)
	if err != nil {
		return nil, info, err
	}
	return countingReader{rc, &w.down}, info, nil
}

type countingReader struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// pattern fills b with bytes that depend on their offset in the file, so
// a misplaced part shows in the checksum.
func pattern(b []byte, off int64) {
	for i := range b {
		x := uint64(off + int64(i))
		b[i] = byte(x ^ x>>8 ^ x>>16)
	}
}

// TestFsyncCostsWhatItWrites: a file written sequentially with an fsync
// every 32 MiB is in the bucket after each fsync, and in all it moves
// about its own size over the network (the bound: at most twice),
// not its size at every fsync.
func TestFsyncCostsWhatItWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 1 GiB")
	}
	const (
		size  = 1 << 30
		every = 32 << 20
		chunk = 1 << 20
	)
	mem := memstore.New()
	store := &wireCounter{ObjectStore: mem}
	opts := testOptions()
	opts.PartSize = 8 * MiB
	opts.MultipartThreshold = 8 * MiB
	opts.MemoryLimit = 128 * MiB
	_, mnt := mountT(t, store, opts)
	f, err := createRaw(filepath.Join(mnt, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, chunk)
	want := sha256.New()
	for off := int64(0); off < size; off += chunk {
		pattern(buf, off)
		want.Write(buf)
		if _, err := f.Write(buf); err != nil {
			t.Fatalf("write at %d: %v", off, err)
		}
		if (off+chunk)%every == 0 {
			if err := f.Sync(); err != nil {
				t.Fatalf("fsync at %d: %v", off+chunk, err)
			}
			// Durable: the object holds everything written so far.
			if info, err := mem.Head(context.Background(), "log"); err != nil || info.Size != off+chunk {
				t.Fatalf("after fsync at %d the object has %d bytes (%v)", off+chunk, info.Size, err)
			}
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	body, _, ok := mem.Object("log")
	if !ok || len(body) != size {
		t.Fatalf("object has %d bytes, want %d", len(body), size)
	}
	if sha256.Sum256(body) != [32]byte(want.Sum(nil)) {
		t.Fatal("object content differs from what was written")
	}
	wire := store.up.Load() + store.down.Load()
	t.Logf("1 GiB with fsync every 32 MiB: %d MiB up, %d MiB down, %d UploadPartCopy", store.up.Load()>>20, store.down.Load()>>20, mem.Count(memstore.OpUploadPartCopy))
	if wire > 2*size {
		t.Errorf("%d MiB crossed the network for a 1024 MiB file, want at most 2048", wire>>20)
	}
	if mem.PendingUploads() != 0 {
		t.Errorf("%d multipart uploads left open", mem.PendingUploads())
	}
}

// Files below the multipart threshold, fsynced often, stay within the bound
// too: from 5 MiB on (the smallest part) an fsync saves the file as a
// multipart upload that the next writes continue server-side. Below that
// S3 has no way to add to an object, and each fsync uploads the file again.
func TestFsyncEveryMiBOfMidSizeFile(t *testing.T) {
	const size, every = 32 << 20, 1 << 20
	mem := memstore.New()
	store := &wireCounter{ObjectStore: mem}
	opts := testOptions()
	opts.MultipartThreshold = 16 * MiB // the default
	_, mnt := mountT(t, store, opts)
	f, err := createRaw(filepath.Join(mnt, "mid"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, every)
	want := sha256.New()
	for off := int64(0); off < size; off += every {
		pattern(buf, off)
		want.Write(buf)
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatalf("fsync at %d: %v", off+every, err)
		}
		if info, err := mem.Head(context.Background(), "mid"); err != nil || info.Size != off+every {
			t.Fatalf("after fsync at %d the object has %d bytes (%v)", off+every, info.Size, err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	body, _, _ := mem.Object("mid")
	if sha256.Sum256(body) != [32]byte(want.Sum(nil)) {
		t.Fatal("object content differs from what was written")
	}
	wire := store.up.Load() + store.down.Load()
	t.Logf("32 MiB with fsync every MiB: %d MiB up, %d MiB down", store.up.Load()>>20, store.down.Load()>>20)
	if wire > 2*size {
		t.Errorf("%d MiB crossed the network for a 32 MiB file, want at most 64", wire>>20)
	}
}

// An append to an existing object of at least one part continues it
// server-side instead of downloading it; a small one is still rewritten.
func TestAppendContinuesLargeObject(t *testing.T) {
	mem := memstore.New()
	store := &wireCounter{ObjectStore: mem}
	big := make([]byte, 6*MiB)
	pattern(big, 0)
	if _, err := mem.Put(context.Background(), "big", bytes.NewReader(big), int64(len(big)), cos.PutOptions{Metadata: map[string]string{"mode": "33188"}}); err != nil {
		t.Fatal(err)
	}
	_, mnt := mountT(t, store, testOptions())
	f, err := openRaw(filepath.Join(mnt, "big"), syscall.O_WRONLY|syscall.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("tail"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	body, info, _ := mem.Object("big")
	if string(body) != string(big)+"tail" {
		t.Fatalf("object after append: %d bytes", len(body))
	}
	if info.Metadata["mode"] != "33188" {
		t.Errorf("metadata lost: %v", info.Metadata)
	}
	if d, u := store.down.Load(), store.up.Load(); d != 0 || u != 4 {
		t.Errorf("append of 4 bytes moved %d bytes down and %d up, want 0 and 4", d, u)
	}

	// Another writer replaced the object since this mount looked: the
	// continuation refuses (ESTALE) instead of splicing onto stale data.
	putObject(t, mem, "big", string(big)+"other writer", nil)
	f, err = openRaw(filepath.Join(mnt, "big"), syscall.O_WRONLY|syscall.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = f.WriteString("x")
	wantErrno(t, "append over another writer's object", err, syscall.ESTALE)
	if body, _, _ := mem.Object("big"); string(body) != string(big)+"other writer" {
		t.Errorf("the other writer's object was changed: %d bytes", len(body))
	}
}
