package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"bazil.org/fuse"
	"golang.org/x/sys/unix"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/fs/memstore"
)

// testOptions are small and cache-friendly; tests change what they need.
func testOptions() Options {
	o := DefaultOptions()
	o.AttrTTL = time.Minute
	o.EntryTTL = time.Minute
	o.NegativeTTL = time.Minute
	o.PartSize = 5 * MiB
	o.MultipartThreshold = 5 * MiB
	o.MemoryLimit = 64 * MiB
	return o
}

// mountT mounts store in a temporary directory. The test goroutine makes
// plain syscalls into the mount while bazil serves it on other goroutines
// (as fstestutil does); cleanup unmounts even when the test failed.
func mountT(t *testing.T, store ObjectStore, opts Options) (*Mounted, string) {
	t.Helper()
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Fatalf("these tests need fusermount3 (apt-get install -y fuse3): %v", err)
	}
	if opts.TempDir == "" {
		opts.TempDir = t.TempDir()
	}
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := Mount(ctx, dir, store, opts)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	watchUnmount(t, dir)                 // its cleanup runs last...
	t.Cleanup(func() { unmountT(t, m) }) // ...after this one
	return m, dir
}

// watchdogScript waits until the test process ($1) is gone or a zombie,
// then aborts the FUSE connection ($3) and lazily unmounts the mountpoint
// ($2) if it is still the mount of that device ($4).
const watchdogScript = `pid=$1 dir=$2 conn=$3 dev=$4
while read -r st < /proc/$pid/stat; do
	st=${st##*) }
	[ "${st%% *}" = Z ] && break
	sleep 1
done 2>/dev/null
grep -q "^[0-9]* [0-9]* $dev / $dir " /proc/self/mountinfo || exit 0
echo 1 > "$conn/abort"
exec fusermount3 -u -z "$dir"`

// watchUnmount covers the paths on which t.Cleanup never runs: a test
// binary that times out (it panics) or is killed. Worse, a process whose
// goroutines are blocked in requests to its own mount cannot finish
// exiting (those threads wait for answers only it could give), stays a
// zombie and keeps the mount. A shell started here notices that, aborts
// the connection and unmounts. The regular cleanup stops it after
// unmounting.
func watchUnmount(t *testing.T, dir string) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Errorf("watchdog: %v", err)
		return
	}
	major, minor := unix.Major(st.Dev), unix.Minor(st.Dev)
	conn := fmt.Sprintf("/sys/fs/fuse/connections/%d", minor)
	cmd := exec.Command("sh", "-c", watchdogScript, "cosmount-test-watchdog",
		strconv.Itoa(os.Getpid()), dir, conn, fmt.Sprintf("%d:%d", major, minor))
	if err := cmd.Start(); err != nil {
		t.Errorf("watchdog: %v", err)
		return
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
}

func unmountT(t *testing.T, m *Mounted) {
	t.Helper()
	// The kernel sends RELEASE for a closed file asynchronously; an unmount
	// that overtakes it ends serving before the handle frees its buffers.
	// Give pending releases a moment so the check below sees a settled FS.
	for settle := time.Now().Add(2 * time.Second); time.Now().Before(settle); time.Sleep(10 * time.Millisecond) {
		if used, _ := m.FS().MemoryStats(); used == m.FS().cachedBytes() {
			break
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := m.Unmount()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("unmount: %v; detaching lazily", err)
			_ = exec.Command("fusermount3", "-u", "-z", m.Mountpoint()).Run()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case <-m.Done():
		if err := m.Wait(); err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("server did not stop after unmount")
	}
	if used, _ := m.FS().MemoryStats(); used != 0 {
		t.Errorf("%d bytes of buffer memory still accounted after unmount", used)
	}
}

// object returns a key's body from the store, failing the test if absent.
func object(t *testing.T, s *memstore.Store, key string) (string, cos.ObjectInfo) {
	t.Helper()
	b, info, ok := s.Object(key)
	if !ok {
		t.Fatalf("object %q not in the store; keys: %v", key, s.Keys())
	}
	return string(b), info
}

func putObject(t *testing.T, s *memstore.Store, key, body string, md map[string]string) {
	t.Helper()
	if _, err := s.Put(context.Background(), key, strings.NewReader(body), int64(len(body)), cos.PutOptions{Metadata: md}); err != nil {
		t.Fatal(err)
	}
}

func wantErrno(t *testing.T, what string, err error, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

// shell runs a command in a separate process, as a user would.
func shell(t *testing.T, dir, script string) string {
	t.Helper()
	cmd := exec.Command("sh", "-ec", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out)
}

var (
	fuseMkdir  = fuse.MkdirRequest{Name: "d", Mode: 0o755}
	fuseRemove = fuse.RemoveRequest{Name: "f"}
)
