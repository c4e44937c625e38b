package fs

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/fs/memstore"
)

// wantCounts compares the store's request counts since the last reset.
func wantCounts(t *testing.T, store *memstore.Store, want map[memstore.Op]int64) {
	t.Helper()
	got := store.Counts()
	ok := len(got) == len(want)
	for op, n := range want {
		ok = ok && got[op] == n
	}
	if !ok {
		t.Errorf("requests %v, want %v", got, want)
	}
}

// Shell commands through the mount: what each costs, and that the object
// is in the store when the command has exited.
func TestShellWriteRequests(t *testing.T) {
	const n = 20
	tests := []struct {
		name   string
		setup  func(t *testing.T, store *memstore.Store, mnt string)
		script string
		want   map[memstore.Op]int64
		bodies map[string]string
	}{
		{
			// The redirection's first close (before echo writes) uploads
			// nothing; the name is probed (GET + LIST) and the root listed once.
			name:   "redirect",
			script: `echo "hello world" > f`,
			want:   map[memstore.Op]int64{memstore.OpGet: 1, memstore.OpList: 2, memstore.OpPut: 1},
			bodies: map[string]string{"f": "hello world\n"},
		},
		{
			// GNU touch sets the times before it closes: the empty object
			// is uploaded by that close.
			name:   "touch",
			script: `touch t`,
			want:   map[memstore.Op]int64{memstore.OpGet: 1, memstore.OpList: 2, memstore.OpPut: 1},
			bodies: map[string]string{"t": ""},
		},
		{
			// A readdir listing answers "absent"; each create checks with
			// one HEAD that no other client wrote the name since.
			name: "redirects into a listed directory",
			setup: func(t *testing.T, store *memstore.Store, mnt string) {
				putObject(t, store, "d/existing", "x", nil)
				shell(t, mnt, "ls d >/dev/null")
			},
			script: fmt.Sprintf(`for i in $(seq 1 %d); do echo "line $i" > d/f$i; done`, n),
			want:   map[memstore.Op]int64{memstore.OpHead: n, memstore.OpPut: n},
			bodies: map[string]string{"d/f1": "line 1\n", fmt.Sprintf("d/f%d", n): fmt.Sprintf("line %d\n", n)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := memstore.New()
			_, mnt := mountT(t, store, testOptions())
			if tc.setup != nil {
				tc.setup(t, store, mnt)
			}
			store.ResetCounts()
			shell(t, mnt, tc.script)
			wantCounts(t, store, tc.want)
			for key, want := range tc.bodies {
				if body, _ := object(t, store, key); body != want {
					t.Errorf("%s = %q, want %q", key, body, want)
				}
			}
		})
	}
}

// cp -r into a directory the mount knows nothing about costs one LIST for
// the directory, not one per file.
func TestCopyIntoDirectoryListsOnce(t *testing.T) {
	const n = 50
	store := memstore.New()
	_, mnt := mountT(t, store, testOptions())
	putObject(t, store, "d/existing", "x", nil)
	src := t.TempDir()
	shell(t, src, fmt.Sprintf(`for i in $(seq 1 %d); do echo "file $i" > f$i; done`, n))
	store.ResetCounts()
	shell(t, mnt, "cp -r "+src+"/. d/")
	// d: GET + LIST (probe), the root listed once; the first file:
	// GET + LIST (probe) and d listed once; every other file: one HEAD
	// (Create's check that nobody wrote the name since the listing).
	wantCounts(t, store, map[memstore.Op]int64{memstore.OpGet: 2, memstore.OpHead: n - 1, memstore.OpList: 4, memstore.OpPut: n})
	if body, _ := object(t, store, fmt.Sprintf("d/f%d", n)); body != fmt.Sprintf("file %d\n", n) {
		t.Errorf("copied body %q", body)
	}
}

// A file created and closed with no write and no setattr is uploaded on
// release, which the kernel sends without waiting: it appears just after.
func TestCreateAndCloseReachesTheStore(t *testing.T) {
	store := memstore.New()
	_, mnt := mountT(t, store, testOptions())
	shell(t, mnt, `: > empty`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if body, _, ok := store.Object("empty"); ok {
			if len(body) != 0 {
				t.Errorf("body %q, want empty", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the empty file never reached the store; keys %v", store.Keys())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := store.Count(memstore.OpPut); got != 1 {
		t.Errorf("%d PUTs, want 1", got)
	}
	if out := shell(t, mnt, `wc -c < empty`); strings.TrimSpace(out) != "0" {
		t.Errorf("size through the mount: %q", out)
	}
}

// The deferred first flush must not hide an upload error from the close
// that follows the data: cat reports its failed close of stdout.
func TestRedirectCloseReportsUploadError(t *testing.T) {
	store := memstore.New()
	m, mnt := mountT(t, store, testOptions())
	store.FailOp(memstore.OpPut, &cos.Error{Op: "PutObject", Kind: cos.ErrUnavailable})
	cmd := exec.Command("sh", "-c", `echo precious | cat > f`)
	cmd.Dir = mnt
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Errorf("the shell succeeded although the upload failed: %s", out)
	}
	store.SetFault(nil)
	if err := m.Flush(context.Background()); err != nil {
		t.Fatalf("flush after failure: %v", err)
	}
	if body, _ := object(t, store, "f"); body != "precious\n" {
		t.Errorf("after flush: %q", body)
	}
}

// The race a cached "absent" must not lose: another client writes a name
// after this mount listed the directory; creating that name through the
// mount opens the object instead of replacing it.
func TestCreateOfNameWrittenAfterListing(t *testing.T) {
	tests := []struct {
		name    string
		script  string
		fails   bool
		want    string
		wantReq map[memstore.Op]int64
	}{
		{
			name:    "append",
			script:  `echo more >> d/new`,
			want:    "first\nmore\n",
			wantReq: map[memstore.Op]int64{memstore.OpHead: 1, memstore.OpGet: 1, memstore.OpPut: 1},
		},
		{
			name:    "truncate",
			script:  `echo replaced > d/new`,
			want:    "replaced\n",
			wantReq: map[memstore.Op]int64{memstore.OpHead: 1, memstore.OpPut: 1},
		},
		{
			name:    "exclusive",
			script:  `set -C; echo clobbered > d/new`,
			fails:   true,
			want:    "first\n",
			wantReq: map[memstore.Op]int64{memstore.OpHead: 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := memstore.New()
			_, mnt := mountT(t, store, testOptions())
			putObject(t, store, "d/a", "a", nil)
			// A lookup lists d for lookups; then the mount answers
			// "absent" for new from that listing, with no request.
			shell(t, mnt, `test -e d/a`)
			store.ResetCounts()
			shell(t, mnt, `test ! -e d/new`)
			wantCounts(t, store, map[memstore.Op]int64{})
			putObject(t, store, "d/new", "first\n", map[string]string{"keep": "me"})
			store.ResetCounts()
			cmd := exec.Command("sh", "-c", tc.script)
			cmd.Dir = mnt
			out, err := cmd.CombinedOutput()
			if tc.fails != (err != nil) {
				t.Errorf("%s: %v, want failure %v\n%s", tc.script, err, tc.fails, out)
			}
			wantCounts(t, store, tc.wantReq)
			body, info := object(t, store, "d/new")
			if body != tc.want {
				t.Errorf("d/new = %q, want %q", body, tc.want)
			}
			if info.Metadata["keep"] != "me" {
				t.Errorf("metadata %v lost the other client's", info.Metadata)
			}
			if got := shell(t, mnt, `cat d/new`); got != tc.want {
				t.Errorf("through the mount: %q, want %q", got, tc.want)
			}
		})
	}
}
