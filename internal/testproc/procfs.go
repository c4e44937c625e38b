package testproc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat. It is
// 100 on every Linux architecture Go supports without cgo to ask sysconf.
const clockTicks = 100

// statFields returns the fields of /proc/PID/stat after the command name,
// so that the state (field 3) is at index 0. The command name may contain
// spaces and parentheses; only the last ')' ends it.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// Running reports whether pid is a live process: it exists and is not a
// zombie (a zombie has ended; only its parent has not reaped it yet).
func Running(pid int) bool {
	f, err := statFields(pid)
	return err == nil && len(f) > 0 && f[0] != "Z"
}

// CPUSeconds returns the user+system CPU time a process has used so far.
func CPUSeconds(pid int) (float64, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	// utime and stime are fields 14 and 15 of the file.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return float64(utime+stime) / clockTicks, nil
}

// PeakRSSKiB returns VmHWM, the process's peak resident set size so far, in
// KiB. The process must still be running (a zombie has no memory left).
func PeakRSSKiB(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/status VmHWM: %w", pid, err)
		}
		return kb, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmHWM", pid)
}

// MinorFaults returns the minor page faults a process has taken so far. On a
// virtual machine each one costs microseconds, so a server that keeps
// touching fresh memory pays for it in CPU time.
func MinorFaults(pid int) (int64, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	// minflt is field 10 of the file.
	if len(f) < 8 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	n, err := strconv.ParseInt(f[7], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return n, nil
}
