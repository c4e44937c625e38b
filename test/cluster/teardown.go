//go:build cluster

package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cosmount/cosmount/internal/testproc"
)

// teardown removes everything a run left under work, working only from
// what is on disk, so it also cleans up after a run that crashed or timed
// out (run.sh's trap runs it in a fresh process). Order matters: container
// processes first (they hold FUSE servers and mounts), then our daemons,
// then containerd's shims, then mounts, then cgroups, then the directory.
func teardown(work string, removeDir bool) error {
	if work == "" || work == "/" {
		return fmt.Errorf("teardown: refusing work directory %q", work)
	}
	var errs []error
	ids := containerIDs(work)
	killCgroupProcs(ids)
	for _, pid := range recordedPIDs(work) {
		if err := killPID(pid, work); err != nil {
			errs = append(errs, err)
		}
	}
	killShims(work)
	killCgroupProcs(ids) // anything a dying shim re-parented meanwhile
	if err := unmountUnder(work); err != nil {
		errs = append(errs, err)
	}
	if err := removeCgroups(work, ids); err != nil {
		errs = append(errs, err)
	}
	if removeDir && len(errs) == 0 {
		if left := mountsUnder(work); len(left) > 0 {
			errs = append(errs, fmt.Errorf("teardown: mounts left under %s: %v", work, left))
		} else if err := os.RemoveAll(work); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// containerIDs lists every container and sandbox containerd made for us:
// the bundle directories in our state directory (they outlive a killed
// containerd).
func containerIDs(work string) []string {
	entries, _ := os.ReadDir(filepath.Join(work, "containerd", "state", "io.containerd.runtime.v2.task", "k8s.io"))
	var ids []string
	for _, e := range entries {
		if e.IsDir() {
			ids = append(ids, e.Name())
		}
	}
	return ids
}

// containerCgroups finds the cgroup directories (every v1 hierarchy) named
// after one of our containers, deepest first.
func containerCgroups(ids []string) []string {
	if len(ids) == 0 {
		return nil
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var dirs []string
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, root := range roots {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			if strings.Count(strings.TrimPrefix(p, root), "/") > 4 {
				return filepath.SkipDir
			}
			if want[d.Name()] {
				dirs = append(dirs, p)
				return filepath.SkipDir
			}
			return nil
		})
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	return dirs
}

// killCgroupProcs SIGKILLs every process in our containers' cgroups: the
// container processes and the FUSE servers the node plugin started.
func killCgroupProcs(ids []string) {
	for _, dir := range containerCgroups(ids) {
		for attempt := 0; attempt < 50; attempt++ {
			pids := readPIDs(filepath.Join(dir, "cgroup.procs"))
			if len(pids) == 0 {
				break
			}
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func readPIDs(path string) []int {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var pids []int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if pid, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killShims ends the containerd shims serving our containerd: they are
// re-parented to init when containerd dies, and their command line names
// our containerd socket.
func killShims(work string) {
	sock := filepath.Join(work, "containerd", "containerd.sock")
	procDirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range procDirs {
		cmdline, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), "containerd-shim") || !strings.Contains(string(cmdline), sock) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(d)); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	under, _ := testproc.MountsUnder(dir)
	var mounts []string
	for _, m := range under {
		mounts = append(mounts, m.Point)
	}
	sort.SliceStable(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	return mounts
}

// unmountUnder detaches every mount below dir (FUSE mounts of dead servers
// included), repeating because a bind mount may be stacked several times.
func unmountUnder(dir string) error {
	for round := 0; round < 10; round++ {
		mounts := mountsUnder(dir)
		if len(mounts) == 0 {
			return nil
		}
		for _, mp := range mounts {
			_ = syscall.Unmount(mp, syscall.MNT_DETACH)
		}
	}
	if left := mountsUnder(dir); len(left) > 0 {
		return fmt.Errorf("teardown: cannot unmount %v", left)
	}
	return nil
}

// removeCgroups removes our containers' cgroups and, if this run created
// it, containerd's "k8s.io" parent (marker files in work say which
// hierarchies had one before).
func removeCgroups(work string, ids []string) error {
	var errs []error
	for _, dir := range containerCgroups(ids) {
		if err := removeCgroupTree(dir, 20); err != nil {
			errs = append(errs, err)
		}
	}
	parents, _ := filepath.Glob("/sys/fs/cgroup/*/k8s.io")
	for _, p := range parents {
		marker := filepath.Join(work, "cgroup-preexisting", filepath.Base(filepath.Dir(p)))
		if _, err := os.Stat(marker); err == nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(work, "cgroup-preexisting")); err != nil {
			continue // no record: we cannot tell whether it is ours
		}
		// One attempt: a busy child belongs to another containerd that
		// started after us, and the parent must then stay.
		if err := removeCgroupTree(p, 1); err != nil && !errors.Is(err, syscall.EBUSY) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeCgroupTree rmdirs a cgroup and its empty children, deepest first,
// trying each up to attempts times (a killed process takes a moment to
// leave its cgroup).
func removeCgroupTree(root string, attempts int) error {
	var dirs []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	var errs []error
	for _, d := range dirs {
		var err error
		for attempt := 0; attempt < attempts; attempt++ {
			if attempt > 0 {
				time.Sleep(100 * time.Millisecond)
			}
			if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
				err = nil
				break
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// recordPreexistingCgroups notes which hierarchies already had a "k8s.io"
// cgroup before this run, so teardown removes only the ones it made.
func recordPreexistingCgroups(work string) error {
	dir := filepath.Join(work, "cgroup-preexisting")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	parents, _ := filepath.Glob("/sys/fs/cgroup/*/k8s.io")
	for _, p := range parents {
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(filepath.Dir(p))), nil, 0o644); err != nil {
			return err
		}
	}
	return nil
}
