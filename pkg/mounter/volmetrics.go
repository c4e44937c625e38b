package mounter

import (
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/volume"
)

// Labels added to every series read from a volume's server. volume_id says
// which volume; target_hash (the name of the target's state directory) tells
// two publishes of the same volume on one node apart. Neither carries a
// secret or the pod's path.
const (
	labelVolumeID   = "volume_id"
	labelTargetHash = "target_hash"
)

// volumeUpMetric is 1 for each volume whose server answered the last scrape
// and 0 for one that did not (hung, crashed, or not serving metrics yet).
const volumeUpMetric = "cosmount_volume_metrics_up"

// DefaultVolumeScrapeTimeout bounds the read of one server's metrics. The
// servers are read in parallel, so it is also about the longest a scrape of
// the mounter waits for them.
const DefaultVolumeScrapeTimeout = 3 * time.Second

// maxExpositionBytes caps what is read from one server; its few counters
// take a few kilobytes, so more means something is wrong.
const maxExpositionBytes = 4 << 20

// VolumeGatherer is a prometheus.Gatherer that reads, at scrape time, the
// metrics every published volume's cosmount server serves on its unix socket
// and re-exports them with the volume_id and target_hash labels added.
// A server that fails or hangs costs at most the timeout and shows as
// cosmount_volume_metrics_up 0; it never fails the scrape.
type VolumeGatherer struct {
	records func() ([]Record, error)
	timeout time.Duration
}

// NewVolumeGatherer returns a gatherer over the volumes records lists. timeout <= 0 means DefaultVolumeScrapeTimeout.
func NewVolumeGatherer(records func() ([]Record, error), timeout time.Duration) *VolumeGatherer {
	if timeout <= 0 {
		timeout = DefaultVolumeScrapeTimeout
	}
	return &VolumeGatherer{records: records, timeout: timeout}
}

// volumeScrape is the outcome of reading one server.
type volumeScrape struct {
	rec  Record
	fams map[string]*dto.MetricFamily
	err  error
}

// Gather implements prometheus.Gatherer.
func (g *VolumeGatherer) Gather() ([]*dto.MetricFamily, error) {
	recs, err := g.records()
	if err != nil {
		// The other volumes' metrics are still worth serving.
		klog.ErrorS(err, "Some volume records cannot be read; their metrics are left out")
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	results := make([]volumeScrape, 0, len(recs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, rec := range recs {
		if rec.ControlSocket == "" {
			continue
		}
		wg.Add(1)
		go func(rec Record) {
			defer wg.Done()
			fams, err := scrapeSocket(ctx, rec.ControlSocket)
			mu.Lock()
			results = append(results, volumeScrape{rec: rec, fams: fams, err: err})
			mu.Unlock()
		}(rec)
	}
	wg.Wait()

	merged := map[string]*dto.MetricFamily{}
	up := &dto.MetricFamily{
		Name: proto.String(volumeUpMetric),
		Help: proto.String("Whether the volume's cosmount server answered the last metrics read (1) or not (0)."),
		Type: dto.MetricType_GAUGE.Enum(),
	}
	for _, r := range results {
		labels := volumeLabels(r.rec)
		value := 1.0
		if r.err != nil {
			value = 0
			klog.V(2).InfoS("Reading a volume's metrics failed", "volumeID", r.rec.Spec.VolumeID, "target", r.rec.Spec.Target, "err", r.err)
		}
		up.Metric = append(up.Metric, &dto.Metric{Label: labels, Gauge: &dto.Gauge{Value: proto.Float64(value)}})
		for _, name := range sortedNames(r.fams) {
			mergeFamily(merged, r.fams[name], labels)
		}
	}
	out := make([]*dto.MetricFamily, 0, len(merged)+1)
	if len(up.Metric) > 0 {
		out = append(out, up)
	}
	for _, name := range sortedNames(merged) {
		out = append(out, merged[name])
	}
	return out, nil
}

// reexported tells the server's families that are re-exported: cosmount's
// own, minus the names the plugin itself uses, so that a server can never
// collide with the plugin's series (or smuggle in Go runtime series that
// would clash with the plugin's).
func reexported(name string) bool {
	return strings.HasPrefix(name, "cosmount_") &&
		!strings.HasPrefix(name, "cosmount_csi_") &&
		!strings.HasPrefix(name, "cosmount_volume_metrics_")
}

// mergeFamily adds fam's series, labelled with labels, to merged.
func mergeFamily(merged map[string]*dto.MetricFamily, fam *dto.MetricFamily, labels []*dto.LabelPair) {
	name := fam.GetName()
	if !reexported(name) {
		return
	}
	dst, ok := merged[name]
	if !ok {
		dst = &dto.MetricFamily{Name: fam.Name, Help: fam.Help, Type: fam.Type, Unit: fam.Unit}
		merged[name] = dst
	} else if dst.GetType() != fam.GetType() {
		// Servers of different versions may disagree; the first one wins
		// rather than the whole scrape failing.
		klog.V(2).InfoS("Skipping a volume metric whose type differs from another volume's", "metric", name)
		return
	}
	for _, m := range fam.Metric {
		m.Label = withLabels(m.Label, labels)
		dst.Metric = append(dst.Metric, m)
	}
}

// withLabels returns own with the volume labels set (replacing any the
// server sent under those names), sorted by name as the registry expects.
func withLabels(own, labels []*dto.LabelPair) []*dto.LabelPair {
	out := make([]*dto.LabelPair, 0, len(own)+len(labels))
	for _, lp := range own {
		if n := lp.GetName(); n != labelVolumeID && n != labelTargetHash {
			out = append(out, lp)
		}
	}
	out = append(out, labels...)
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

func volumeLabels(rec Record) []*dto.LabelPair {
	return []*dto.LabelPair{
		{Name: proto.String(labelTargetHash), Value: proto.String(TargetHash(rec.Spec.Target))},
		{Name: proto.String(labelVolumeID), Value: proto.String(rec.Spec.VolumeID)},
	}
}

func sortedNames(fams map[string]*dto.MetricFamily) []string {
	names := make([]string, 0, len(fams))
	for n := range fams {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// scrapeSocket reads and parses the text exposition served at /metrics on
// the unix socket sock.
func scrapeSocket(ctx context.Context, sock string) (map[string]*dto.MetricFamily, error) {
	client := httpOverUnix(sock)
	// The host is never resolved: the transport always dials sock.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://cosmount"+volume.ControlMetricsPath, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics endpoint answered %s", resp.Status)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/plain" {
		return nil, fmt.Errorf("metrics endpoint answered with content type %q, want text/plain", resp.Header.Get("Content-Type"))
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(io.LimitReader(resp.Body, maxExpositionBytes))
	if err != nil {
		return nil, fmt.Errorf("parsing metrics: %w", err)
	}
	return fams, nil
}
