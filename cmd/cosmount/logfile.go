package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/klog/v2/textlogger"

	"github.com/cosmount/cosmount/pkg/volume"
)

// logFileMaxSize bounds --log-file: past it the file is renamed to FILE.1
// (replacing the previous one) and a new FILE is started, so a mount that
// runs for months uses at most twice this on disk.
const logFileMaxSize = 10 * volume.MiB

// setupLogging directs this server's log: to --log-file when given (a
// detached mount has no terminal to write to), naming the volume and
// rate-limited when the node's mounter runs it (--volume-id). Otherwise
// klog's default, stderr, stays. It returns a function that closes the log
// file. A write to a closed stderr (the terminal that started a detached
// mount is gone, or its pipe reader exited) must never kill a server that
// holds unsaved data, so SIGPIPE is ignored: such writes just fail.
func setupLogging(f *mountFlags) (func(), error) {
	signal.Ignore(syscall.SIGPIPE)
	if f.volumeID == "" && f.logFile == "" {
		return func() {}, nil
	}
	var out io.Writer = os.Stderr
	closeLog := func() {}
	if f.logFile != "" {
		rf, err := openRotatingFile(f.logFile, logFileMaxSize)
		if err != nil {
			return nil, fmt.Errorf("--log-file: %w", err)
		}
		out, closeLog = rf, func() { _ = rf.Close() }
	}
	if f.volumeID != "" {
		out = newRateLimitedWriter(out, logLinesPerSecond, logBurst, time.Now)
	}
	v, err := strconv.Atoi(f.verbosity())
	if err != nil {
		v = 0
	}
	logger := textlogger.NewLogger(textlogger.NewConfig(textlogger.Output(out), textlogger.Verbosity(v)))
	if f.volumeID != "" {
		logger = logger.WithValues("volumeID", f.volumeID)
	}
	klog.SetLoggerWithOptions(logger, klog.ContextualLogger(true))
	return closeLog, nil
}

// rotatingFile is an append-only log file that is rotated once it would
// grow past max: FILE becomes FILE.1 and a new FILE is started. Each Write
// is one log line and is never split across files.
type rotatingFile struct {
	path string
	max  int64

	mu   sync.Mutex
	f    *os.File // guarded by mu
	size int64    // guarded by mu
}

func openRotatingFile(path string, max int64) (*rotatingFile, error) {
	r := &rotatingFile{path: path, max: max}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

// open opens (or creates, 0600: a log may name buckets and keys) the file
// for appending and learns its size. Requires mu or exclusive access.
func (r *rotatingFile) open() error {
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	r.f, r.size = f, st.Size()
	return nil
}

func (r *rotatingFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return 0, os.ErrClosed
	}
	if r.size > 0 && r.size+int64(len(p)) > r.max {
		r.rotate()
	}
	n, err := r.f.Write(p)
	r.size += int64(n)
	return n, err
}

// rotate moves the full file aside and starts a new one. If that fails
// (the directory became read-only, say) it keeps writing to the old file
// rather than losing lines; the size bound is then not kept until a later
// rotation succeeds. Requires mu.
func (r *rotatingFile) rotate() {
	if err := os.Rename(r.path, r.path+".1"); err != nil {
		return
	}
	old := r.f
	if err := r.open(); err != nil {
		r.f = old
		return
	}
	old.Close()
}

func (r *rotatingFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}
