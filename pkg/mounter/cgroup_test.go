package mounter

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cosmount/cosmount/pkg/mounterapi"
	"github.com/cosmount/cosmount/pkg/volume"
)

// A server over its memory budget is OOM-killed alone, in its own cgroup:
// the mounter and the other volume's server go on, and the dead volume says
// why. Servers do not keep the mounter's OOM score.
func TestRunawayServerIsKilledAlone(t *testing.T) {
	needFUSE(t)
	if _, err := detectMemCgroups(); err != nil {
		t.Skipf("memory cgroups are not writable here: %v", err)
	}
	const budget = 96 * volume.MiB
	m := newTestMounter(t, stateDir(t), func(o *Options) { o.ServerMemoryLimit = budget })
	if m.cg == nil {
		t.Fatal("the mounter found no memory cgroup although detectMemCgroups does")
	}
	calm := testRequest(t, m, "calm")
	calm.Spec.Options.MemoryLimit = 16 * volume.MiB
	rc := publish(t, m, calm)
	hog := testRequest(t, m, "hog")
	hog.Spec.Bucket = "fake-hog"
	hog.Spec.Options.MemoryLimit = 16 * volume.MiB
	publish(t, m, hog)

	st := waitState(t, m, hog.Spec.Target, mounterapi.StateDead)
	deadline := time.Now().Add(20 * time.Second)
	for st.Reason != "ServerOOMKilled" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		st = waitState(t, m, hog.Spec.Target, mounterapi.StateDead)
	}
	if st.Reason != "ServerOOMKilled" || !strings.Contains(st.Message, "96 MiB") {
		t.Fatalf("runaway server: %+v", st)
	}
	if got := testutil.ToFloat64(m.metrics.deaths.WithLabelValues("ServerOOMKilled")); got != 1 {
		t.Errorf("deaths{ServerOOMKilled} = %v", got)
	}
	if st := waitState(t, m, calm.Spec.Target, mounterapi.StateHealthy); st.PID != rc.Volume.PID {
		t.Errorf("the other server changed: %+v", st)
	}
	if cg := readMountFile(t, calm.Spec.Target, "cgroup"); !strings.Contains(cg, "cosmount-"+TargetHash(calm.Spec.Target)) {
		t.Errorf("the calm server's cgroup is %q", cg)
	}
	rec, _ := readRecord(m.volumeDir(calm.Spec.Target))
	limitFile := "/memory.limit_in_bytes"
	if m.cg.v2 {
		limitFile = "/memory.max"
	}
	if limit, _ := os.ReadFile(rec.Cgroup + limitFile); strings.TrimSpace(string(limit)) != strconv.FormatInt(budget, 10) {
		t.Errorf("cgroup %s %q, want %d", limitFile, limit, budget)
	}
	adj, _ := strconv.Atoi(readMountFile(t, calm.Spec.Target, "oomadj"))
	if want := oomScoreAdj(budget); adj != want {
		t.Errorf("server oom_score_adj %d, want %d (the mounter's is %s)", adj, want, strings.TrimSpace(readFileOr("/proc/self/oom_score_adj")))
	}
	unpublish(t, m, hog.Spec.Target)
	unpublish(t, m, calm.Spec.Target)
	for _, r := range []string{hog.Spec.Target, calm.Spec.Target} {
		if _, err := os.Stat(m.cg.root + "/cosmount-" + TargetHash(r)); !os.IsNotExist(err) {
			t.Errorf("cgroup of %s left behind: %v", r, err)
		}
	}
}

func readFileOr(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func TestOOMScoreAdj(t *testing.T) {
	total := memTotal()
	if total <= 0 {
		t.Skip("no /proc/meminfo")
	}
	for _, tc := range []struct {
		budget int64
		want   int
	}{
		{0, 999},
		{total / 2, 500},
		{total * 2, 2},
		{1, 999},
	} {
		if got := oomScoreAdj(tc.budget); got != tc.want {
			t.Errorf("oomScoreAdj(%d) = %d, want %d", tc.budget, got, tc.want)
		}
	}
}
