package fs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/fs/memstore"
)

// interruptWriterEnv makes the test binary, started by
// TestInterruptedRequestsComplete, run interruptedWriter instead of the tests.
const interruptWriterEnv = "COSMOUNT_FS_TEST_INTERRUPTED_WRITER"

const interruptFiles = 300

func TestMain(m *testing.M) {
	if dir := os.Getenv(interruptWriterEnv); dir != "" {
		os.Exit(interruptedWriter(dir))
	}
	os.Exit(m.Run())
}

func interruptContent(i int) []byte {
	return []byte(strings.Repeat(fmt.Sprintf("file %d;", i), 400))
}

// busySink keeps the busy loop from being optimised away.
var busySink int

// interruptedWriter runs in a child process (a process must not write to
// a mount it serves through Go's file layer, and signals must hit the
// writer, not the server). It writes small files with plain syscalls while
// its writing thread is hit by SIGURG, the signal the Go runtime uses to
// preempt goroutines, and reports every failed open, write, close or stat;
// EINTR is not retried, as a C program would not retry close.
func interruptedWriter(dir string) int {
	runtime.LockOSThread()
	pid, tid := os.Getpid(), syscall.Gettid()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = syscall.Tgkill(pid, tid, syscall.SIGURG)
			time.Sleep(200 * time.Microsecond)
		}
	}()
	go func() {
		// A goroutine that never blocks: the runtime preempts it (and
		// the others) with SIGURG on its own.
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for i := 0; i < 1_000_000; i++ {
				busySink += i
			}
		}
	}()
	failures := 0
	for i := 0; i < interruptFiles; i++ {
		path := filepath.Join(dir, fmt.Sprintf("f%03d", i))
		if err := writeAndStat(path, interruptContent(i)); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			failures++
		}
	}
	close(stop)
	wg.Wait()
	if failures > 0 {
		fmt.Fprintf(os.Stderr, "%d of %d files failed\n", failures, interruptFiles)
		return 1
	}
	return 0
}

func writeAndStat(path string, data []byte) error {
	fd, err := syscall.Open(path, syscall.O_CREAT|syscall.O_WRONLY|syscall.O_TRUNC|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	if _, err := syscall.Write(fd, data); err != nil {
		syscall.Close(fd)
		return fmt.Errorf("write: %w", err)
	}
	if err := syscall.Close(fd); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return fmt.Errorf("stat: %w", err)
	}
	if st.Size != int64(len(data)) {
		return fmt.Errorf("stat: size %d, want %d", st.Size, len(data))
	}
	return nil
}

// A signal during a FUSE request becomes an INTERRUPT; operations must
// still complete, or close() fails with EINTR and the upload is lost.
func TestInterruptedRequestsComplete(t *testing.T) {
	store := memstore.New()
	store.SetLatency(5 * time.Millisecond) // every request is in flight when a signal comes
	_, mnt := mountT(t, store, testOptions())
	dir := filepath.Join(mnt, "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), interruptWriterEnv+"="+dir)
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		lines := strings.SplitN(string(out), "\n", 11)
		t.Fatalf("writer failed (%v); first errors:\n%s", err, strings.Join(lines[:min(len(lines), 10)], "\n"))
	}
	for i := 0; i < interruptFiles; i++ {
		key := fmt.Sprintf("d/f%03d", i)
		if body, _ := object(t, store, key); body != string(interruptContent(i)) {
			t.Fatalf("%s: %d bytes in the store", key, len(body))
		}
	}
}
