package fs

import (
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/fs/memstore"
)

type opLog struct {
	mu   sync.Mutex
	ops  map[string]int // "op" or "op:ERRNO"
	slow time.Duration  // the longest answer
}

func (l *opLog) ObserveOp(op string, d time.Duration, errno string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if errno != "" {
		op += ":" + errno
	}
	l.ops[op]++
	l.slow = max(l.slow, d)
}

func (l *opLog) count(op string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ops[op]
}

// TestOpObserver: with Options.Ops set, every answered request is reported
// with its operation (readdir told from read), its errno and its duration,
// and none is reported twice or left pending.
func TestOpObserver(t *testing.T) {
	log := &opLog{ops: map[string]int{}}
	opts := testOptions()
	opts.Ops = log
	_, dir := mountT(t, memstore.New(), opts)

	if err := writeFile(dir+"/a.txt", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if got, err := readFile(dir + "/a.txt"); err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v", got, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir+"/missing", &st); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("stat of a missing name: %v", err)
	}
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := syscall.ReadDirent(fd, buf); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)

	for _, op := range []string{"create", "write", "flush", "open", "read", "lookup:ENOENT", "readdir"} {
		if log.count(op) == 0 {
			t.Errorf("no %s reported; saw %v", op, log.ops)
		}
	}
	// One file written once: each of its requests is reported once.
	for _, op := range []string{"create", "write"} {
		if n := log.count(op); n != 1 {
			t.Errorf("%d %s reported for one file written once; saw %v", n, op, log.ops)
		}
	}
	// An errno bazil has no name for is still named, not described.
	if got := errnoName(syscall.ENOTSUP.Error()); got != "ENOTSUP" && got != "EOPNOTSUPP" {
		t.Errorf("errnoName(ENOTSUP's message) = %q", got)
	}
	log.mu.Lock()
	for op := range log.ops {
		if op != strings.ToLower(op) && !strings.Contains(op, ":E") {
			t.Errorf("operation %q is not in lower case", op)
		}
	}
	if log.slow <= 0 {
		t.Error("no request took any time")
	}
	log.mu.Unlock()
}
