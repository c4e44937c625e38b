package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

const (
	MiB = int64(1) << 20
	GiB = int64(1) << 30

	// rssLimit is the most the server process may hold resident while
	// moving a file much larger than that.
	rssLimit = 256 * MiB
)

// TestLargeFileBoundedMemory writes 1 GiB through the mount and reads it back
// on a fresh mount (so that no page cache can answer), comparing SHA-256,
// while each server process's peak RSS stays under 256 MiB.
func TestLargeFileBoundedMemory(t *testing.T) {
	const size = 1 * GiB
	env := emulatortest.Start(t)
	b := newAPI(t, env)

	writer := mountWriter(t, env)
	start := time.Now()
	wrote := writeDeterministic(t, writer.path("big.bin"), size, 1, 0)
	writeTime := time.Since(start)
	writeRSS := writer.peakRSS(t)
	if info, ok := b.head("big.bin"); !ok || info.Size != size {
		t.Fatalf("big.bin through the API: exists %v, size %d, want %d", ok, info.Size, size)
	}
	if err := writer.terminate(t); err != nil {
		t.Errorf("writing server exited with %v\n%s", err, writer.log())
	}

	reader := mountWriter(t, env)
	// A few reads at scattered offsets first: readahead must reset on the
	// seeks and still return the right bytes.
	f, err := os.Open(reader.path("big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range probeOffsets {
		got := make([]byte, probeLen)
		if _, err := f.ReadAt(got, off); err != nil {
			t.Errorf("read of %d bytes at %d: %v", probeLen, off, err)
		} else if want := probe(off); !bytes.Equal(got, want) {
			t.Errorf("read of %d bytes at %d differs from what was written", probeLen, off)
		}
	}
	f.Close()

	start = time.Now()
	read, n := hashFile(t, reader.path("big.bin"))
	readTime := time.Since(start)
	readRSS := reader.peakRSS(t)

	if n != size || read != wrote {
		t.Errorf("read back %d bytes with sha256 %x, wrote %d bytes with sha256 %x", n, read, size, wrote)
	}
	report := fmt.Sprintf("1 GiB: write %.1fs (%.0f MiB/s) peak RSS %d MiB; read %.1fs (%.0f MiB/s) peak RSS %d MiB",
		writeTime.Seconds(), float64(size/MiB)/writeTime.Seconds(), writeRSS/MiB,
		readTime.Seconds(), float64(size/MiB)/readTime.Seconds(), readRSS/MiB)
	t.Logf("peak RSS: %s", report)
	fmt.Printf("e2e: %s\n", report)
	for _, r := range []struct {
		what string
		rss  int64
	}{{"writing", writeRSS}, {"reading", readRSS}} {
		if r.rss >= rssLimit {
			t.Errorf("peak RSS of the server while %s 1 GiB: %d MiB, want under %d MiB", r.what, r.rss/MiB, rssLimit/MiB)
		}
	}
}

// probeOffsets are where TestLargeFileBoundedMemory reads at random.
var probeOffsets = []int64{512*MiB - 7, 3, 1*GiB - probeLen, 5*MiB + 123, 700 * MiB}

const probeLen = 64 << 10

// probe regenerates the probeLen bytes of the seed-1 stream at off.
func probe(off int64) []byte {
	r := rand.NewChaCha8(seedBytes(1))
	_, _ = io.CopyN(io.Discard, r, off) // a ChaCha8 stream never fails
	b := make([]byte, probeLen)
	_, _ = r.Read(b)
	return b
}

// writeDeterministic writes size bytes of seeded pseudo-random data to a new
// file in 1 MiB writes, pausing after each write, closes it (which uploads
// it) and returns the data's SHA-256. Any write or close error fails the test.
func writeDeterministic(t *testing.T, path string, size int64, seed uint64, pause time.Duration) [32]byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	dst := io.MultiWriter(f, h)
	if pause > 0 {
		dst = pacedWriter{dst, pause}
	}
	_, err = io.CopyBuffer(dst, io.LimitReader(rand.NewChaCha8(seedBytes(seed)), size), make([]byte, MiB))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("writing %s: %v", path, err)
	}
	return [32]byte(h.Sum(nil))
}

// pacedWriter sleeps after every write.
type pacedWriter struct {
	w     io.Writer
	pause time.Duration
}

func (p pacedWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	time.Sleep(p.pause)
	return n, err
}

func seedBytes(seed uint64) [32]byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return s
}

// hashFile reads a file to its end and returns its SHA-256 and length.
func hashFile(t *testing.T, path string) ([32]byte, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, f, make([]byte, MiB))
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return [32]byte(h.Sum(nil)), n
}
