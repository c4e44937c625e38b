package e2e

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

// TestConcurrentWriters: 8 writers create 50 files each in one directory at
// the same time, each file with its own content; every file must then hold
// exactly its content both in the bucket and through the mount. The first
// file of each writer is larger than the multipart threshold, so streaming
// uploads run alongside the small ones.
func TestConcurrentWriters(t *testing.T) {
	const (
		writers        = 8
		filesPerWriter = 50
		bigSize        = 17 * MiB // above the default 16 MiB multipart threshold
	)
	env := emulatortest.Start(t)
	b := newAPI(t, env)
	m := mountWriter(t, env)
	if err := os.Mkdir(m.path("conc"), 0o755); err != nil {
		t.Fatal(err)
	}

	name := func(w, i int) string { return fmt.Sprintf("w%d-f%02d.bin", w, i) }
	content := func(w, i int) []byte {
		size := 1 + (w*7919+i*104729)%(64<<10)
		if i == 0 {
			size = int(bigSize)
		}
		data := make([]byte, size)
		_, _ = rand.NewChaCha8(seedBytes(uint64(w*1000 + i))).Read(data)
		return data
	}

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for w := range writers {
		wg.Go(func() {
			for i := range filesPerWriter {
				// os.WriteFile returns the error of close(), which is
				// where an upload failure must show.
				if err := os.WriteFile(m.path("conc", name(w, i)), content(w, i), 0o644); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Errorf("concurrent write: %v", err)
	}
	if len(errs) > 0 {
		t.Fatalf("cosmount log:\n%s", m.log())
	}

	if keys := b.keys("conc/"); len(keys) != writers*filesPerWriter+1 {
		t.Errorf("%d keys under conc/, want %d files and the marker", len(keys), writers*filesPerWriter)
	}
	entries, err := os.ReadDir(m.path("conc"))
	if err != nil || len(entries) != writers*filesPerWriter {
		t.Errorf("readdir conc through the mount: %d entries (%v), want %d", len(entries), err, writers*filesPerWriter)
	}
	bad := 0
	for w := range writers {
		for i := range filesPerWriter {
			want := sha256.Sum256(content(w, i))
			key := "conc/" + name(w, i)
			if got, n := b.sha256Of(key); got != want {
				t.Errorf("%s through the API: %d bytes, sha256 %x, want %x", key, n, got, want)
				bad++
			}
			if got, n := hashFile(t, m.path("conc", name(w, i))); got != want {
				t.Errorf("%s through the mount: %d bytes, sha256 %x, want %x", key, n, got, want)
				bad++
			}
		}
	}
	if bad > 0 {
		t.Logf("%d of %d checks failed", bad, 2*writers*filesPerWriter)
	}
}
