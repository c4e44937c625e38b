package mounter

import (
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/cosmount/cosmount/pkg/volume"
)

// fakeVolumeServer serves a registry shaped like a cosmount server's on a
// unix socket and returns the socket path.
func fakeVolumeServer(t *testing.T, dir, name string, puts, refreshes float64, extra ...prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cosmount_s3_requests_total", Help: "COS operations."}, []string{"operation"})
	tokens := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cosmount_iam_token_refreshes_total", Help: "IAM token exchanges."}, []string{"result"})
	reg.MustRegister(append([]prometheus.Collector{requests, tokens}, extra...)...)
	requests.WithLabelValues("PutObject").Add(puts)
	requests.WithLabelValues("HeadBucket").Add(1)
	tokens.WithLabelValues("success").Add(refreshes)
	return serveOnSocket(t, filepath.Join(dir, name), promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
}

func serveOnSocket(t *testing.T, sock string, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // ends with ErrServerClosed at cleanup
	t.Cleanup(func() { srv.Close() })
	return sock
}

// series flattens families into "name{label=value,...}" -> value.
func series(fams []*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.Metric {
			var labels []string
			for _, lp := range m.Label {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			sort.Strings(labels)
			key := f.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Untyped != nil:
				out[key] = m.Untyped.GetValue()
			}
		}
	}
	return out
}

func TestVolumeGatherer(t *testing.T) {
	// Unix socket paths are limited to 108 bytes; t.TempDir() can be longer.
	dir, err := os.MkdirTemp("", "volmetrics-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	// A server exposing series the plugin owns itself or that would clash
	// with its runtime metrics: they must not be re-exported.
	clash := prometheus.NewCounter(prometheus.CounterOpts{Name: "cosmount_csi_rpc_total", Help: "not the plugin's"})
	clash.Add(7)
	goroutines := prometheus.NewGauge(prometheus.GaugeOpts{Name: "go_goroutines", Help: "runtime"})
	sockA := fakeVolumeServer(t, dir, "a.sock", 2, 1, clash, goroutines)
	sockB1 := fakeVolumeServer(t, dir, "b1.sock", 5, 3)
	sockB2 := fakeVolumeServer(t, dir, "b2.sock", 1, 1)

	// A hung server accepts and never answers; the scrape must not wait for it.
	block := make(chan struct{})
	sockHung := serveOnSocket(t, filepath.Join(dir, "hung.sock"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(block) })
	// A server that answers something that is not an exposition.
	sockBad := serveOnSocket(t, filepath.Join(dir, "bad.sock"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		w.Write([]byte("this is { not metrics\n"))
	}))

	recs := []Record{
		{Spec: volume.Spec{VolumeID: "vol-a", Target: "/pods/1/mount"}, ControlSocket: sockA},
		// One volume published to two pods: the target hash keeps them apart.
		{Spec: volume.Spec{VolumeID: "vol-b", Target: "/pods/2/mount"}, ControlSocket: sockB1},
		{Spec: volume.Spec{VolumeID: "vol-b", Target: "/pods/3/mount"}, ControlSocket: sockB2},
		{Spec: volume.Spec{VolumeID: "vol-hung", Target: "/pods/4/mount"}, ControlSocket: sockHung},
		{Spec: volume.Spec{VolumeID: "vol-crashed", Target: "/pods/5/mount"}, ControlSocket: filepath.Join(dir, "gone.sock")},
		{Spec: volume.Spec{VolumeID: "vol-bad", Target: "/pods/6/mount"}, ControlSocket: sockBad},
		// Without a control socket: not scraped, not reported.
		{Spec: volume.Spec{VolumeID: "vol-nosocket", Target: "/pods/7/mount"}},
	}
	h := func(target string) string { return TargetHash(target) }

	g := NewVolumeGatherer(func() ([]Record, error) { return recs, nil }, 3*time.Second)
	// Behind prometheus.Gatherers, as the driver serves it, so that the
	// registry's consistency checks (duplicates, label order) apply too.
	own := prometheus.NewRegistry()
	rpc := prometheus.NewCounter(prometheus.CounterOpts{Name: "cosmount_csi_rpc_total", Help: "CSI RPCs."})
	own.MustRegister(rpc)
	done := make(chan struct{})
	var fams []*dto.MetricFamily
	go func() {
		defer close(done)
		fams, err = prometheus.Gatherers{own, g}.Gather()
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Gather blocked on the hung server")
	}
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	got := series(fams)

	want := map[string]float64{"cosmount_csi_rpc_total{}": 0}
	for _, v := range []struct {
		id, target      string
		puts, refreshes float64
	}{
		{"vol-a", "/pods/1/mount", 2, 1},
		{"vol-b", "/pods/2/mount", 5, 3},
		{"vol-b", "/pods/3/mount", 1, 1},
	} {
		l := "target_hash=" + h(v.target) + ",volume_id=" + v.id
		want["cosmount_s3_requests_total{operation=PutObject,"+l+"}"] = v.puts
		want["cosmount_s3_requests_total{operation=HeadBucket,"+l+"}"] = 1
		want["cosmount_iam_token_refreshes_total{result=success,"+l+"}"] = v.refreshes
		want["cosmount_volume_metrics_up{"+l+"}"] = 1
	}
	for _, v := range []struct{ id, target string }{
		{"vol-hung", "/pods/4/mount"}, {"vol-crashed", "/pods/5/mount"}, {"vol-bad", "/pods/6/mount"},
	} {
		want["cosmount_volume_metrics_up{target_hash="+h(v.target)+",volume_id="+v.id+"}"] = 0
	}
	// Exact: this also proves the go_* and cosmount_csi_* series of server
	// A, and anything of the volume without a socket, are left out.
	for k, v := range want {
		if gv, ok := got[k]; !ok || gv != v {
			t.Errorf("%s = %v (present %v), want %v", k, gv, ok, v)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected series %s = %v", k, v)
		}
	}
}

func TestVolumeGathererListError(t *testing.T) {
	g := NewVolumeGatherer(func() ([]Record, error) { return nil, errors.New("state dir unreadable") }, time.Second)
	fams, err := g.Gather()
	if err != nil || len(fams) != 0 {
		t.Errorf("Gather = %v, %v; want nothing and no error so the mounter's own metrics are still served", fams, err)
	}
}
