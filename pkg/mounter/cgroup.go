package mounter

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// memCgroups puts each server in a memory cgroup of its own, a child of the
// mounter's, with the server's memory budget as its hard limit: a runaway
// server is then OOM-killed alone, within its budget, and never drags the
// mounter or another volume's server down with it. Children are accounted
// to the parent too, so the mounter's container limit still covers all.
type memCgroups struct {
	root string // the mounter's memory cgroup directory
	v2   bool
}

// cgroupRoot is where cgroup filesystems are mounted; tests override it.
var cgroupRoot = "/sys/fs/cgroup"

// detectMemCgroups finds the mounter's own memory cgroup and checks that a
// child can be made in it. It fails when cgroups are not writable (an
// unprivileged container); the caller then runs servers without a hard
// limit and says so.
func detectMemCgroups() (*memCgroups, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var v1Path, v2Path string
	haveV2 := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2Path, haveV2 = parts[2], true
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "memory" {
				v1Path = parts[2]
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var candidates []memCgroups
	switch {
	case v1Path != "":
		// On the host the hierarchy shows the full path; in a container the
		// runtime usually mounts the container's own cgroup as the root.
		base := filepath.Join(cgroupRoot, "memory")
		candidates = append(candidates, memCgroups{root: filepath.Join(base, v1Path)}, memCgroups{root: base})
	case haveV2 && fileExists(filepath.Join(cgroupRoot, "cgroup.controllers")):
		candidates = append(candidates, memCgroups{root: filepath.Join(cgroupRoot, v2Path), v2: true}, memCgroups{root: cgroupRoot, v2: true})
	default:
		return nil, errors.New("no memory cgroup in /proc/self/cgroup")
	}
	pid := strconv.Itoa(os.Getpid())
	for _, c := range candidates {
		if !containsLine(filepath.Join(c.root, "cgroup.procs"), pid) {
			continue
		}
		if err := c.check(); err != nil {
			return nil, err
		}
		return &c, nil
	}
	return nil, fmt.Errorf("the mounter's memory cgroup (%s) is not visible under %s", v1Path+v2Path, cgroupRoot)
}

// check makes and removes a child, which is what creating a server's
// cgroup needs. On cgroup v2 it also enables the memory controller for
// children; that is refused while the mounter itself sits in the cgroup
// alongside other processes ("no internal processes"), and then there is no
// per-server limit.
func (c *memCgroups) check() error {
	if c.v2 {
		if err := os.WriteFile(filepath.Join(c.root, "cgroup.subtree_control"), []byte("+memory"), 0o644); err != nil {
			return fmt.Errorf("enabling the memory controller below %s: %w", c.root, err)
		}
	}
	probe := filepath.Join(c.root, "cosmount-probe")
	if err := os.Mkdir(probe, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("cannot make memory cgroups below %s: %w", c.root, err)
	}
	return os.Remove(probe)
}

// create makes the cgroup for one server with limit bytes and returns its
// directory.
func (c *memCgroups) create(name string, limit int64) (string, error) {
	dir := filepath.Join(c.root, "cosmount-"+name)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	file, value := "memory.limit_in_bytes", strconv.FormatInt(limit, 10)
	if c.v2 {
		file = "memory.max"
	}
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0o644); err != nil {
		os.Remove(dir)
		return "", fmt.Errorf("setting %s of %s: %w", file, dir, err)
	}
	if c.v2 {
		// Swap would let a runaway server slow the whole node down instead of
		// ending; not every kernel has the file.
		_ = os.WriteFile(filepath.Join(dir, "memory.swap.max"), []byte("0"), 0o644)
	}
	return dir, nil
}

// add moves pid into the cgroup at dir.
func addToCgroup(dir string, pid int) error {
	return os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
}

// oomKills reports how many processes the kernel's OOM killer ended in the
// cgroup at dir (cgroup v2 memory.events, or v1 memory.oom_control on
// kernels that count them).
func oomKills(dir string) int {
	for _, f := range []string{"memory.events", "memory.oom_control"} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
				n, _ := strconv.Atoi(strings.TrimSpace(v))
				return n
			}
		}
	}
	return 0
}

// removeCgroup removes an empty cgroup; a missing one is fine.
func removeCgroup(dir string) error {
	if dir == "" {
		return nil
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// oomScoreAdj is the value a server gets: what kubelet gives a burstable
// container whose memory request is the server's budget (1000 minus the
// budget's share of the node's memory in thousandths, within 2..999). A
// server is a pod's I/O path, so it should not outlive the node's ordinary
// workloads under memory pressure, nor be the first to go; and it must not
// keep the node-critical value of the mounter it is started from.
func oomScoreAdj(budget int64) int {
	total := memTotal()
	if total <= 0 || budget <= 0 {
		return 999
	}
	adj := 1000 - int(1000*budget/total)
	switch {
	case adj < 2:
		return 2
	case adj > 999:
		return 999
	}
	return adj
}

func setOOMScoreAdj(pid, adj int) error {
	return os.WriteFile("/proc/"+strconv.Itoa(pid)+"/oom_score_adj", []byte(strconv.Itoa(adj)), 0o644)
}

// memTotal is the machine's memory in bytes from /proc/meminfo.
func memTotal() int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return kb * 1024
			}
		}
	}
	return 0
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func containsLine(path, want string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(data), "\n") {
		if l == want {
			return true
		}
	}
	return false
}
