package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cosmount/cosmount/internal/testproc"
	"github.com/cosmount/cosmount/pkg/cos"
)

// bench runs the scenarios and collects samples.
type bench struct {
	cfg     *config
	srv     *s3Server
	client  *cos.Client
	payload *payload
	probe   *probe
	ts      *toolSet
	cl      *cleanups
	res     results

	// afterScenario deletes the buckets of the scenario in progress.
	afterScenario []func()
}

// runAll interleaves the tools inside each run, so that the noise of a
// shared machine spreads over all of them instead of favouring one.
func (b *bench) runAll(ctx context.Context, tools []*tool) error {
	var errs []error
	shared, err := b.sharedBuckets(ctx)
	if err != nil {
		return err
	}
	lsBuckets := map[string]string{}
	if slices.Contains(b.cfg.scenarios, "ls") {
		for _, t := range tools {
			bucket, err := b.newBucket(ctx, t, "ls", 0)
			if err != nil {
				return err
			}
			start := time.Now()
			if err := populate(ctx, b.client.Bucket(bucket), b.payload, "many", b.cfg.lsObjects); err != nil {
				return fmt.Errorf("populate %s: %w", bucket, err)
			}
			logf("populated %s with %d objects in %s", bucket, b.cfg.lsObjects, time.Since(start).Round(time.Millisecond))
			lsBuckets[t.name] = bucket
		}
	}
	for run := 1; run <= b.cfg.runs; run++ {
		for _, sc := range b.cfg.scenarios {
			for _, t := range tools {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				var err error
				switch sc {
				case "seq":
					err = b.runSeq(ctx, t, run)
				case "small":
					err = b.runSmall(ctx, t, run)
				case "ls":
					err = b.runLs(ctx, t, lsBuckets[t.name])
				case "reread":
					err = b.runReread(ctx, t, shared["reread"])
				case "multi":
					err = b.runMulti(ctx, t, shared["multi"])
				case "bigwrite":
					err = b.runBigWrite(ctx, t, run)
				}
				if err != nil {
					logf("run %d %s %s: %v", run, sc, t.name, err)
					errs = append(errs, fmt.Errorf("run %d %s %s: %w", run, sc, t.name, err))
				}
				if err := b.srv.resetAudit(ctx); err != nil {
					return err
				}
			}
		}
	}
	return errors.Join(errs...)
}

// newBucket creates a fresh bucket for one tool and scenario, deleted at the
// end (or on interrupt).
func (b *bench) newBucket(ctx context.Context, t *tool, scenario string, run int) (string, error) {
	name := fmt.Sprintf("bench-%s-%s-%d", t.name, scenario, run)
	if err := b.client.CreateBucket(ctx, name, ""); err != nil {
		return "", fmt.Errorf("create bucket %s: %w", name, err)
	}
	if scenario == "ls" {
		// Kept for every run; it goes with the server's data directory.
		return name, nil
	}
	// Deleted right after the scenario, so the server's disk holds at most
	// one large file at a time.
	del := b.cl.add(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := b.client.EmptyAndDeleteBucket(ctx, name); err != nil {
			logf("delete bucket %s: %v", name, err)
		}
	})
	b.afterScenario = append(b.afterScenario, del)
	return name, nil
}

// measure runs fn as one timed phase on session s and records its costs.
// The probe's own requests are subtracted from the server's counts.
func (b *bench) measure(ctx context.Context, s *session, bucket string, fn func() error) (sample, error) {
	mark, err := b.srv.auditLength(ctx)
	if err != nil {
		return sample{}, err
	}
	b.probe.take()
	srv0, err1 := testproc.CPUSeconds(b.srv.proc.PID())
	cli0, err2 := testproc.CPUSeconds(s.pid())
	flt0, err3 := testproc.MinorFaults(s.pid())
	if err := errors.Join(err1, err2, err3); err != nil {
		return sample{}, err
	}
	start := time.Now()
	if err := fn(); err != nil {
		return sample{}, err
	}
	sm := sample{Seconds: time.Since(start).Seconds()}
	srv1, err1 := testproc.CPUSeconds(b.srv.proc.PID())
	cli1, err2 := testproc.CPUSeconds(s.pid())
	flt1, err3 := testproc.MinorFaults(s.pid())
	if err := errors.Join(err1, err2, err3); err != nil {
		return sample{}, err
	}
	sm.ServerCPU, sm.ClientCPU, sm.MinorFaults = srv1-srv0, cli1-cli0, flt1-flt0
	if s.proc != nil {
		if sm.PeakRSSMiB, err = peakRSSMiB(s.pid()); err != nil {
			return sample{}, err
		}
	}
	// The server appends an audit entry after it has sent the response, so
	// the last request of the phase may not be logged yet; the clock and
	// the CPU counters have already been read.
	time.Sleep(300 * time.Millisecond)
	reqs, err := b.srv.requestsSince(ctx, mark, bucket)
	if err != nil {
		return sample{}, err
	}
	for op, n := range b.probe.take() {
		if reqs != nil {
			reqs[op] -= n
		}
	}
	sm.Requests = reqs
	return sm, nil
}

// phaseRun opens a session, measures fn in it, closes it and records the
// sample (or the failure) under phase.
func (b *bench) phaseRun(ctx context.Context, t *tool, phase, bucket string, fill func(*sample), fn func(*session) error) error {
	return b.phaseRunWith(ctx, t, phase, bucket, phaseSetup{}, fill, fn)
}

// phaseSetup varies a phase's session: the tool's own read cache on, and
// work done in the session before the measurement starts.
type phaseSetup struct {
	cached  bool
	prepare func(*session) error
}

func (b *bench) phaseRunWith(ctx context.Context, t *tool, phase, bucket string, setup phaseSetup, fill func(*sample), fn func(*session) error) error {
	s, err := b.ts.open(ctx, t, bucket, setup.cached)
	if err != nil {
		b.res.add(phase, t.name, sample{Error: err.Error()})
		return err
	}
	if setup.prepare != nil {
		if err := setup.prepare(s); err != nil {
			s.close()
			b.res.add(phase, t.name, sample{Error: err.Error()})
			return fmt.Errorf("%s: before measuring: %w", phase, err)
		}
	}
	sm, err := b.measure(ctx, s, bucket, func() error { return fn(s) })
	s.close()
	if s.profile != "" {
		// The server wrote its profiles when it exited; name them by phase.
		for _, kind := range []string{".cpu.pprof", ".alloc.pprof"} {
			if rerr := os.Rename(s.profile+kind, s.profile+"-"+phase+kind); rerr != nil {
				logf("profile of %s %s: %v", phase, t.name, rerr)
			}
		}
	}
	if err != nil {
		b.res.add(phase, t.name, sample{Error: err.Error()})
		return fmt.Errorf("%s: %w", phase, err)
	}
	fill(&sm)
	b.res.add(phase, t.name, sm)
	logf("%-11s %-15s %7.2fs  server CPU %6.2fs  client CPU %6.2fs  RSS %4.0f MiB  faults %7d  %s",
		phase, t.name, sm.Seconds, sm.ServerCPU, sm.ClientCPU, sm.PeakRSSMiB, sm.MinorFaults, fmtRequests(sm.Requests))
	return nil
}

func (b *bench) finishScenario() {
	for _, del := range b.afterScenario {
		del()
	}
	b.afterScenario = nil
}

func (b *bench) runSeq(ctx context.Context, t *tool, run int) error {
	defer b.finishScenario()
	bucket, err := b.newBucket(ctx, t, "seq", run)
	if err != nil {
		return err
	}
	const key = "big.bin"
	size := b.cfg.seqSize
	want := b.payload.crc(size)
	fill := func(s *sample) { s.Bytes = size }
	err = b.phaseRun(ctx, t, "seq-write", bucket, fill, func(s *session) error {
		if err := seqWrite(ctx, s, b.payload, key, size, b.cfg); err != nil {
			return err
		}
		return b.probe.waitObject(ctx, bucket, key, size, 10*time.Minute)
	})
	if err != nil {
		return err
	}
	if err := dropCaches(); err != nil {
		return err
	}
	return b.phaseRun(ctx, t, "seq-read", bucket, fill, func(s *session) error {
		got, n, err := seqRead(ctx, s, key, b.cfg)
		if err != nil {
			return err
		}
		if n != size || got != want {
			return fmt.Errorf("read back %d bytes with CRC-32C %08x, want %d bytes with %08x", n, got, size, want)
		}
		return nil
	})
}

func (b *bench) runSmall(ctx context.Context, t *tool, run int) error {
	defer b.finishScenario()
	bucket, err := b.newBucket(ctx, t, "small", run)
	if err != nil {
		return err
	}
	const dir = "small"
	n, size := b.cfg.smallFiles, b.cfg.smallSize
	fill := func(s *sample) { s.Files = n; s.Bytes = int64(n * size) }
	err = b.phaseRun(ctx, t, "small-write", bucket, fill, func(s *session) error {
		if err := smallWrite(ctx, s, b.payload, dir, n, size); err != nil {
			return err
		}
		return b.probe.waitObjects(ctx, bucket, dir, n, int64(size), 10*time.Minute)
	})
	if err != nil {
		return err
	}
	if err := dropCaches(); err != nil {
		return err
	}
	return b.phaseRun(ctx, t, "small-read", bucket, fill, func(s *session) error {
		return smallRead(ctx, s, b.payload, dir, n, size)
	})
}

func (b *bench) runLs(ctx context.Context, t *tool, bucket string) error {
	if err := dropCaches(); err != nil {
		return err
	}
	n := b.cfg.lsObjects
	return b.phaseRun(ctx, t, "ls-l", bucket, func(s *sample) { s.Files = n }, func(s *session) error {
		return list(ctx, s, "many", n)
	})
}

// Names of the objects of the shared buckets.
const (
	rereadKey = "big.bin"
)

func multiKey(i int) string { return fmt.Sprintf("reader%02d.bin", i) }

// sharedBuckets creates and fills, once, the buckets that scenarios only
// read (every tool reads the same objects): reread's file and multi's.
func (b *bench) sharedBuckets(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	fillBucket := func(scenario string, keys []string, size int64) error {
		name := "bench-shared-" + scenario
		if err := b.client.CreateBucket(ctx, name, ""); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
		start := time.Now()
		for _, key := range keys {
			if _, err := b.client.Bucket(name).UploadStream(ctx, key, b.payload.reader(size), cos.PutOptions{}, b.cfg.partSize, b.cfg.concurrency); err != nil {
				return fmt.Errorf("populate %s/%s: %w", name, key, err)
			}
		}
		logf("populated %s with %d x %d MiB in %s", name, len(keys), size>>20, time.Since(start).Round(time.Millisecond))
		out[scenario] = name
		return nil
	}
	if slices.Contains(b.cfg.scenarios, "reread") {
		if err := fillBucket("reread", []string{rereadKey}, b.cfg.seqSize); err != nil {
			return nil, err
		}
	}
	if slices.Contains(b.cfg.scenarios, "multi") {
		keys := make([]string, b.cfg.multiFiles)
		for i := range keys {
			keys[i] = multiKey(i)
		}
		if err := fillBucket("multi", keys, b.cfg.multiSize); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// runReread reads the file once in a session (not measured), drops the
// page cache and measures the second read in the same session: without a
// read cache ("reread"), then with each tool's own cache ("reread-cache";
// the SDK has none and reads again).
func (b *bench) runReread(ctx context.Context, t *tool, bucket string) error {
	size := b.cfg.seqSize
	want := b.payload.crc(size)
	read := func(s *session) error {
		got, n, err := seqRead(ctx, s, rereadKey, b.cfg)
		if err != nil {
			return err
		}
		if n != size || got != want {
			return fmt.Errorf("read back %d bytes with CRC-32C %08x, want %d bytes with %08x", n, got, size, want)
		}
		return nil
	}
	first := func(s *session) error {
		if err := dropCaches(); err != nil {
			return err
		}
		if err := read(s); err != nil {
			return err
		}
		return dropCaches()
	}
	fill := func(s *sample) { s.Bytes = size }
	var errs []error
	for _, cached := range []bool{false, true} {
		phase := "reread"
		if cached {
			phase = "reread-cache"
		}
		setup := phaseSetup{cached: cached, prepare: first}
		if err := b.phaseRunWith(ctx, t, phase, bucket, setup, fill, read); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// runMulti reads multiFiles files at once, one reader each, on a cold
// mount; the SDK reads them with one ranged GET of a part in flight per
// file (as many in flight as readers).
func (b *bench) runMulti(ctx context.Context, t *tool, bucket string) error {
	if err := dropCaches(); err != nil {
		return err
	}
	n, size := b.cfg.multiFiles, b.cfg.multiSize
	want := b.payload.crc(size)
	fill := func(s *sample) { s.Bytes = int64(n) * size; s.Files = n }
	return b.phaseRun(ctx, t, "multi-read", bucket, fill, func(s *session) error {
		return multiRead(ctx, s, n, size, want, b.cfg)
	})
}

// runBigWrite writes one large file through cosmount, for its peak RSS
// while writing (memory stays bounded whatever the file's size).
func (b *bench) runBigWrite(ctx context.Context, t *tool, run int) error {
	if !strings.HasPrefix(t.name, "cosmount") {
		return nil
	}
	defer b.finishScenario()
	bucket, err := b.newBucket(ctx, t, "bigwrite", run)
	if err != nil {
		return err
	}
	size := b.cfg.bigWrite
	return b.phaseRun(ctx, t, "big-write", bucket, func(s *sample) { s.Bytes = size }, func(s *session) error {
		if err := seqWrite(ctx, s, b.payload, "huge.bin", size, b.cfg); err != nil {
			return err
		}
		return b.probe.waitObject(ctx, bucket, "huge.bin", size, 30*time.Minute)
	})
}
