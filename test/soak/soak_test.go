package soak

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cosmount/cosmount/internal/testproc"
	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
	"github.com/cosmount/cosmount/pkg/emulator/faults"
)

// profile is the size of a run.
type profile struct {
	name           string
	duration       time.Duration // of the workload
	tokenLifetime  time.Duration // of IAM access tokens
	outageAt       time.Duration // IAM outage start, from the workload's start
	outage         time.Duration // IAM outage length (more than two token lifetimes)
	faultRate      float64
	streamers      int
	streamSize     int64
	fsyncEvery     int64
	smallFiles     int
	appendsPerFile int
	rewriteMax     int64
}

var profiles = map[string]profile{
	// short runs inside `go test ./...`: under three minutes on two cores,
	// the build of the binary included.
	"short": {
		name: "short", duration: 45 * time.Second, tokenLifetime: 4 * time.Second,
		outageAt: 12 * time.Second, outage: 10 * time.Second, faultRate: 0.1,
		streamers: 2, streamSize: 24 << 20, fsyncEvery: 8 << 20,
		smallFiles: 400, appendsPerFile: 20, rewriteMax: 7 << 20,
	},
	// long is `make soak`.
	"long": {
		name: "long", duration: 15 * time.Minute, tokenLifetime: 5 * time.Second,
		outageAt: 7 * time.Minute, outage: 15 * time.Second, faultRate: 0.1,
		streamers: 3, streamSize: 320 << 20, fsyncEvery: 32 << 20,
		smallFiles: 5000, appendsPerFile: 50, rewriteMax: 24 << 20,
	},
}

var profileName = flag.String("soak.profile", "short", "soak profile: short (part of go test ./...) or long (make soak)")

// cosmountBin is the binary under test, built once by TestMain.
var cosmountBin string

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	flag.Parse()
	dir, err := os.MkdirTemp("", "cosmount-soak-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "cosmount")
	goCmd := "go"
	if root := os.Getenv("GOROOT"); root != "" {
		if _, err := exec.LookPath("go"); err != nil {
			goCmd = filepath.Join(root, "bin", "go")
		}
	}
	build := exec.Command(goCmd, "build", "-o", bin, "github.com/cosmount/cosmount/cmd/cosmount")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "soak: building cmd/cosmount:", err)
		return 1
	}
	cosmountBin = bin
	return m.Run()
}

func requireFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("/dev/fuse is missing (%v): FUSE mounts are impossible here", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("fusermount3 is not installed (apt-get install -y fuse3); CI installs it")
	}
}

// childEnv is the test's environment without COSMOUNT_* credentials.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "COSMOUNT_") {
			env = append(env, kv)
		}
	}
	return env
}

// mount starts `cosmount mount --foreground` as the trusted profile's pod,
// and stops it (and removes the mount) in t.Cleanup even on failure.
func mount(t *testing.T, env *emulatortest.Env, dir, controlSocket string) *testproc.Process {
	t.Helper()
	token := env.WritePodToken(t, t.TempDir(), "default", "default", "soak-pod", time.Hour)
	cmd := exec.Command(cosmountBin, "mount", "--foreground",
		"--endpoint", env.COSURL, "--iam-endpoint", env.IAMURL,
		"--trusted-profile-id", emulatortest.WriterProfileID, "--cr-token-file", token,
		"--control-socket", controlSocket,
		"-o", "temp_dir="+t.TempDir()+",part_size=5MiB,multipart_threshold=5MiB,memory_limit=128MiB",
		env.Bucket, dir)
	cmd.Env = childEnv()
	p, err := testproc.Start("cosmount", filepath.Join(filepath.Dir(dir), "server.log"), 0o600, cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if killed, _ := p.Stop(2 * time.Minute); killed {
			t.Errorf("cosmount (pid %d) ignored SIGTERM for 2 minutes; killed", p.PID())
		}
		if testproc.IsMounted(dir, "") {
			t.Errorf("%s still mounted after cosmount exited; detaching it", dir)
			_ = exec.Command("fusermount3", "-uz", dir).Run()
		}
	})
	if err := testproc.WaitMounted(context.Background(), p, dir, "fuse.cosmount", true, 90*time.Second); err != nil {
		log, _ := testproc.Tail(p.LogPath, 50)
		t.Fatalf("%v\n%s", err, log)
	}
	return p
}

// metric sums the samples of one metric family read from the server's
// metrics socket.
func metric(t *testing.T, socket, name string) float64 {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}, Timeout: 30 * time.Second}
	resp, err := client.Get("http://cosmount/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// TestSoak: see the package documentation.
func TestSoak(t *testing.T) {
	p, ok := profiles[*profileName]
	if !ok {
		t.Fatalf("unknown -soak.profile %q", *profileName)
	}
	if testing.Short() && p.name == "short" {
		t.Skip("-short")
	}
	requireFUSE(t)
	env := emulatortest.Start(t)
	env.SetAccessTokenLifetime(p.tokenLifetime)
	base := t.TempDir()
	mnt := filepath.Join(base, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(base, "metrics.sock")
	server := mount(t, env, mnt, socket)
	r := &run{mnt: mnt, model: newModel(), stats: newStats()}
	for _, d := range []string{"small", "append", "rewrite", "probe", "stream-0", "stream-1", "stream-2", "stream-3"} {
		if err := os.Mkdir(filepath.Join(mnt, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	// A tenth of all COS requests fail, in every way the injector knows.
	cosFaults := env.COSFaults()
	if err := cosFaults.SetRandom(faults.Random{
		Rate:       p.faultRate,
		Kinds:      []faults.Kind{faults.InternalError, faults.SlowDown, faults.Reset, faults.ResetMidBody, faults.Slow},
		ResetAfter: 32 << 10,
		SlowDelay:  time.Second,
	}); err != nil {
		t.Fatal(err)
	}
	auditStart := env.AuditLen()
	ctx, cancel := context.WithTimeout(context.Background(), p.duration)
	defer cancel()
	start := time.Now()

	var wg sync.WaitGroup
	for i := 0; i < p.streamers; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); r.streamer(ctx, i, p) }()
	}
	for _, w := range []func(){
		func() { r.smallFiles(ctx, p) },
		func() { r.appender(ctx, true, p) },
		func() { r.appender(ctx, false, p) },
		func() { r.rewriter(ctx, p) },
	} {
		wg.Add(1)
		go func() { defer wg.Done(); w() }()
	}

	// The IAM outage, longer than two token lifetimes, in the middle.
	probeErr := make(chan error, 1)
	go func() {
		if !sleepCtx(ctx, p.outageAt) {
			probeErr <- errors.New("the run ended before the outage")
			return
		}
		r.stats.phase.Store(phaseOutage)
		if err := env.IAMFaults().Unavailable(p.outage, faults.ServiceUnavailable); err != nil {
			probeErr <- err
			return
		}
		t.Logf("%v: IAM unavailable for %v (token lifetime %v)", time.Since(start).Round(time.Second), p.outage, p.tokenLifetime)
		// Until every token of before the outage has expired and a new one
		// could be had.
		if !sleepCtx(ctx, p.outage+p.tokenLifetime) {
			probeErr <- errors.New("the run ended during the outage")
			return
		}
		r.stats.phase.Store(phaseAfter)
		t.Logf("%v: IAM back; probing", time.Since(start).Round(time.Second))
		probeErr <- r.probe()
	}()
	wg.Wait()
	workload := time.Since(start)
	if err := <-probeErr; err != nil {
		t.Errorf("after the IAM outage, I/O through the same mount did not work again: %v", err)
	}

	// Faults off; the server must still be serving, then stop cleanly
	// (SIGTERM flushes what is still dirty and unmounts).
	if err := cosFaults.SetRandom(faults.Random{}); err != nil {
		t.Fatal(err)
	}
	injected := cosFaults.Injected()
	attempts := 0
	for _, e := range env.AuditSince(auditStart) {
		if e.Service == "cos" {
			attempts++
		}
	}
	if server.Exited() {
		log, _ := testproc.Tail(server.LogPath, 80)
		t.Fatalf("the cosmount server exited during the run (%v):\n%s", server.Err(), log)
	}
	operations := metric(t, socket, "cosmount_s3_requests_total")
	if killed, err := server.Stop(2 * time.Minute); killed || err != nil {
		t.Errorf("stopping cosmount: killed %v, %v", killed, err)
	}
	if err := server.Err(); err != nil {
		log, _ := testproc.Tail(server.LogPath, 80)
		t.Errorf("cosmount exited with %v after SIGTERM:\n%s", err, log)
	}

	// The bucket against the model.
	violations, checked := check(t, env, r.model)
	var lost int64
	for _, v := range violations {
		lost += v.lost
		t.Errorf("%s: bucket has %v, allowed %v", v.key, v.got, v.allowed)
	}
	r.stats.mu.Lock()
	for _, u := range r.stats.unexpected {
		t.Errorf("unexpected error: %s", u)
	}
	errnos := fmt.Sprint(r.stats.errnos)
	r.stats.mu.Unlock()
	for _, w := range []string{"streamer-0", "small", "append-large", "append-small", "rewrite"} {
		n := int64(0)
		if c, ok := r.stats.okAfter.Load(w); ok {
			n = c.(interface{ Load() int64 }).Load()
		}
		if n == 0 {
			t.Errorf("%s: no operation succeeded after the IAM outage", w)
		}
	}
	kinds := make([]string, 0, len(injected))
	total := int64(0)
	for k, n := range injected {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
		total += n
	}
	sort.Strings(kinds)
	summary := fmt.Sprintf("soak %s: %v, %d operations (%d errors reported: %s), %d MiB written, %d objects checked, "+
		"%d COS requests, %d faults injected (%s), %.0f retries, IAM outage %v with %v tokens, %d violations, bytes lost = %d",
		p.name, workload.Round(time.Second), r.stats.ops.Load(), r.stats.failed.Load(), errnos, r.stats.bytesOK.Load()>>20, checked,
		attempts, total, strings.Join(kinds, ", "), float64(attempts)-operations, p.outage, p.tokenLifetime, len(violations), lost)
	t.Log(summary)
	fmt.Println(summary)
	if total == 0 {
		t.Error("no fault was injected: the run proves nothing")
	}
	if r.stats.failed.Load() == 0 {
		t.Error("no error was reported to any writer, although IAM was down longer than two token lifetimes")
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// probe writes a file through the mount and reads it back; faults are still
// on, so it may take a few tries.
func (r *run) probe() error {
	var err error
	for i := 0; i < 5; i++ {
		key := fmt.Sprintf("probe/after-outage-%d", i)
		var h *hasher
		h, err = r.session("probe", "probe", key, os.O_CREATE|os.O_EXCL|os.O_WRONLY, nil, 100<<10, 32<<10, 0)
		if err != nil {
			continue
		}
		var b []byte
		b, err = os.ReadFile(filepath.Join(r.mnt, key))
		if err != nil {
			continue
		}
		got := newHasher()
		got.Write(b)
		if got.version() != h.version() {
			return fmt.Errorf("%s reads back %v, wrote %v", key, got.version(), h.version())
		}
		return nil
	}
	return err
}

// check reads every key of the model, and lists the bucket for keys the
// model does not know, straight from the emulator.
func check(t *testing.T, env *emulatortest.Env, m *model) ([]violation, int) {
	t.Helper()
	id, secret := env.HMAC()
	c, err := cos.New(cos.Options{Endpoint: env.COSURL, UsePathStyle: true, HMAC: &cos.HMAC{AccessKeyID: id, SecretAccessKey: secret}})
	if err != nil {
		t.Fatal(err)
	}
	b := c.Bucket(env.Bucket)
	ctx := context.Background()
	var listed []string
	for o := (cos.ListOptions{}); ; {
		page, err := b.List(ctx, o)
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		for _, obj := range page.Objects {
			if !strings.HasSuffix(obj.Key, "/") { // directory markers of mkdir
				listed = append(listed, obj.Key)
			}
		}
		if page.NextContinuationToken == "" {
			break
		}
		o.ContinuationToken = page.NextContinuationToken
	}
	actual := func(key string) version {
		rc, _, err := b.Get(ctx, key, cos.GetOptions{})
		if errors.Is(err, cos.ErrNotFound) {
			return absent
		}
		if err != nil {
			t.Fatalf("GET %s: %v", key, err)
		}
		defer rc.Close()
		h := sha256.New()
		n, err := io.Copy(h, rc)
		if err != nil {
			t.Fatalf("GET %s: %v", key, err)
		}
		v := version{size: n}
		copy(v.sum[:], h.Sum(nil))
		return v
	}
	return m.check(actual, listed)
}
