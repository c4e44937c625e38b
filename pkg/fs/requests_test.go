package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/fs/memstore"
)

// The requests small-file work costs: every name is resolved from a
// listing or from what this mount did, never with a HEAD + LIST per file.
func TestSmallFileRequestCounts(t *testing.T) {
	const n = 100
	body := func(i int) []byte { return []byte(fmt.Sprintf("small file %d", i)) }
	tests := []struct {
		name  string
		setup func(t *testing.T, store *memstore.Store, mnt string) // before counting
		run   func(t *testing.T, mnt string)
		want  map[memstore.Op]int64
	}{
		{
			name: "create in a directory made by mkdir",
			setup: func(t *testing.T, _ *memstore.Store, mnt string) {
				if err := os.Mkdir(filepath.Join(mnt, "d"), 0o755); err != nil {
					t.Fatal(err)
				}
			},
			run: func(t *testing.T, mnt string) {
				for i := 0; i < n; i++ {
					if err := writeFile(filepath.Join(mnt, "d", fmt.Sprintf("f%03d", i)), body(i)); err != nil {
						t.Fatal(err)
					}
				}
			},
			want: map[memstore.Op]int64{memstore.OpPut: n},
		},
		{
			name: "create in an existing directory",
			setup: func(t *testing.T, store *memstore.Store, _ string) {
				putObject(t, store, "d/existing", "x", nil)
			},
			run: func(t *testing.T, mnt string) {
				for i := 0; i < n; i++ {
					if err := writeFile(filepath.Join(mnt, "d", fmt.Sprintf("f%03d", i)), body(i)); err != nil {
						t.Fatal(err)
					}
				}
			},
			// d is probed (GET + LIST) and the root listed; the first new
			// name is probed (GET + LIST) and d listed; the others are
			// absent from that listing, and Create HEADs each (doc.go).
			want: map[memstore.Op]int64{memstore.OpList: 4, memstore.OpGet: 2, memstore.OpHead: n - 1, memstore.OpPut: n},
		},
		{
			name: "read after ls",
			setup: func(t *testing.T, store *memstore.Store, mnt string) {
				for i := 0; i < n; i++ {
					putObject(t, store, fmt.Sprintf("d/f%03d", i), string(body(i)), nil)
				}
				shell(t, mnt, "ls -l d >/dev/null")
			},
			run: func(t *testing.T, mnt string) {
				for i := 0; i < n; i++ {
					if b, err := readFile(filepath.Join(mnt, "d", fmt.Sprintf("f%03d", i))); err != nil || string(b) != string(body(i)) {
						t.Fatalf("read f%03d: %q %v", i, b, err)
					}
				}
			},
			want: map[memstore.Op]int64{memstore.OpGet: n},
		},
		{
			name: "cold read",
			setup: func(t *testing.T, store *memstore.Store, _ string) {
				for i := 0; i < n; i++ {
					putObject(t, store, fmt.Sprintf("d/f%03d", i), string(body(i)), nil)
				}
			},
			run: func(t *testing.T, mnt string) {
				for i := 0; i < n; i++ {
					if b, err := readFile(filepath.Join(mnt, "d", fmt.Sprintf("f%03d", i))); err != nil || string(b) != string(body(i)) {
						t.Fatalf("read f%03d: %q %v", i, b, err)
					}
				}
			},
			// d and the first file are probed (GET + LIST), which lists
			// their directories once; every file then costs one request:
			// the lookup's GET of its first bytes brings the metadata
			// (mode, owner, mtime, symlink) and the data the read needs.
			want: map[memstore.Op]int64{memstore.OpList: 4, memstore.OpGet: n + 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := memstore.New()
			_, mnt := mountT(t, store, testOptions())
			tc.setup(t, store, mnt)
			store.ResetCounts()
			tc.run(t, mnt)
			got := store.Counts()
			if len(got) != len(tc.want) {
				t.Errorf("requests %v, want %v", got, tc.want)
			}
			for op, n := range tc.want {
				if got[op] != n {
					t.Errorf("requests %v, want %v", got, tc.want)
					break
				}
			}
		})
	}
}

// Names created by another client in a listed directory appear once the
// listing is older than EntryTTL.
func TestNameCreatedElsewhereAppearsAfterEntryTTL(t *testing.T) {
	const ttl = 200 * time.Millisecond
	store := memstore.New()
	opts := testOptions()
	opts.EntryTTL, opts.AttrTTL, opts.NegativeTTL = ttl, ttl, ttl
	_, mnt := mountT(t, store, opts)
	if err := os.Mkdir(filepath.Join(mnt, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := os.Stat(filepath.Join(mnt, "d", "late"))
	wantErrno(t, "stat before", err, syscall.ENOENT)
	putObject(t, store, "d/late", "from elsewhere", nil)
	putObject(t, store, "d/sub/x", "a directory from elsewhere", nil)
	time.Sleep(3 * ttl)
	if fi, err := os.Stat(filepath.Join(mnt, "d", "late")); err != nil || fi.Size() != int64(len("from elsewhere")) {
		t.Errorf("stat after EntryTTL: %v %v", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(mnt, "d", "sub")); err != nil || !fi.IsDir() {
		t.Errorf("stat dir after EntryTTL: %v %v", fi, err)
	}
}
