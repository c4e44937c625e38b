package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// supervisedEnv marks the mounter process a supervisor started.
const supervisedEnv = "COSMOUNT_SUPERVISED"

// superviseMounter is the whole life of the mounter container's PID 1: it
// starts the mounter as its child, restarts it when it ends without being
// asked to, reaps the servers it inherits, and passes SIGTERM on. It does
// nothing else, so that it has nothing to crash on: a container ends when its
// PID 1 does, and with it every server. A crash of the mounter itself
// (a bug, a panic) then costs no mount: its servers are re-parented here
// and keep serving, and the restarted mounter adopts them from its records.
func superviseMounter() error {
	if os.Getpid() != 1 {
		// Outside a container: become the parent of orphaned servers, as
		// PID 1 is, so that they are reaped here.
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("becoming a child subreaper: %w", err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	type exit struct {
		pid int
		ws  syscall.WaitStatus
	}
	exits := make(chan exit, 16)
	go func() {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, 0, nil)
			switch {
			case err == nil:
				exits <- exit{pid, ws}
			case errors.Is(err, syscall.EINTR):
			default: // ECHILD: nothing to wait for right now
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	start := func() (int, error) {
		p, err := os.StartProcess(self, os.Args, &os.ProcAttr{
			Env:   append(os.Environ(), supervisedEnv+"=1"),
			Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		})
		if err != nil {
			return 0, err
		}
		pid := p.Pid
		_ = p.Release() // reaped by the loop above
		return pid, nil
	}
	child, err := start()
	if err != nil {
		return fmt.Errorf("starting the mounter: %w", err)
	}
	started := time.Now()
	backoff := time.Second
	klog.InfoS("Supervising the mounter", "pid", child)
	terminating := false
	for {
		select {
		case s := <-sigs:
			terminating = true
			klog.InfoS("Passing the signal on to the mounter", "signal", s.String(), "pid", child)
			_ = syscall.Kill(child, s.(syscall.Signal))
		case e := <-exits:
			if e.pid != child {
				continue // an inherited server ended; it is reaped, nothing more
			}
			if terminating {
				if e.ws.Exited() {
					os.Exit(e.ws.ExitStatus())
				}
				return nil
			}
			if time.Since(started) > time.Minute {
				backoff = time.Second
			}
			klog.ErrorS(nil, "The mounter ended; restarting it. Its servers keep serving and are adopted by the new mounter",
				"pid", child, "status", describeWait(e.ws), "after", backoff)
			time.Sleep(backoff)
			if backoff < 30*time.Second {
				backoff *= 2
			}
			if child, err = start(); err != nil {
				return fmt.Errorf("restarting the mounter: %w", err)
			}
			started = time.Now()
		}
	}
}

func describeWait(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return fmt.Sprintf("exit status %d", ws.ExitStatus())
}
