package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// readyFDEnv names the inherited file descriptor on which a detached child
// reports "ok" once its mount is live, or "error: ..." if it failed. The
// parent waits for that line so `cosmount mount` returns only when the
// mountpoint can be used, like mount(8).
const readyFDEnv = "COSMOUNT_READY_FD"

// detach re-executes this program with args (`mount --foreground ...`) in a
// new session and waits until the child reports that the mount is live.
// argv holds no secrets (they come from files or the environment), so it is
// safe to pass on. With a log file, the child's stderr goes there too (a
// Go runtime crash writes to stderr), not to the terminal that started it.
func detach(timeout time.Duration, args []string, logFile string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding own executable: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), readyFDEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// Without a log file the child's own log goes to stderr of the command
	// that started it; once that terminal is gone, log lines are lost, never
	// data (the child ignores SIGPIPE).
	cmd.Stdout, cmd.Stderr = nil, os.Stderr
	if logFile != "" {
		lf, err := os.OpenFile(logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			w.Close()
			return fmt.Errorf("--log-file: %w", err)
		}
		defer lf.Close()
		cmd.Stderr = lf
	}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("starting background process: %w", err)
	}
	w.Close()

	type result struct {
		line string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		done <- result{strings.TrimSpace(line), err}
	}()
	select {
	case res := <-done:
		if res.line == "ok" {
			_ = cmd.Process.Release()
			return nil
		}
		if msg, ok := strings.CutPrefix(res.line, "error: "); ok {
			_ = cmd.Wait()
			return errors.New(msg)
		}
		werr := cmd.Wait()
		if res.err == io.EOF || res.line == "" {
			return fmt.Errorf("background process exited before the mount was live: %v", werr)
		}
		return fmt.Errorf("background process: unexpected report %q", res.line)
	case <-time.After(timeout):
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		return fmt.Errorf("mount was not live after %s", timeout)
	}
}

// readyReporter is how a foreground process started by detach reports back;
// for a process started any other way it does nothing.
type readyReporter struct{ f *os.File }

func newReadyReporter() *readyReporter {
	fd := os.Getenv(readyFDEnv)
	os.Unsetenv(readyFDEnv)
	if fd != "3" {
		return &readyReporter{}
	}
	return &readyReporter{f: os.NewFile(3, "ready")}
}

func (r *readyReporter) report(err error) {
	if r.f == nil {
		return
	}
	if err != nil {
		fmt.Fprintf(r.f, "error: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
	} else {
		fmt.Fprintln(r.f, "ok")
	}
	r.f.Close()
	r.f = nil
}
