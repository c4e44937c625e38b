// Command bench measures cosmount against the aws-sdk-go-v2 client alone
// (the ceiling), s3fs and rclone, side by side against one S3 server
// process: sequential write and read, many small files, and ls -l of a large
// directory. It is a program, not a test: `make bench` runs it, `go test`
// does not. It needs root (FUSE mounts, dropping the page cache).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/volume"
)

type config struct {
	runs        int
	quick       bool
	server      string
	binDir      string
	outDir      string
	tools       []string
	scenarios   []string
	seqSize     int64
	smallFiles  int
	smallSize   int
	lsObjects   int
	partSize    int64
	concurrency int
	keep        bool
	profile     bool
	multiFiles  int   // readers (and files) of the multi scenario
	multiSize   int64 // size of each of those files
	bigWrite    int64 // size of the bigwrite scenario's file
}

// allScenarios are the scenarios in the order they run.
var allScenarios = []string{"seq", "small", "ls", "reread", "multi", "bigwrite"}

func numCPU() int { return runtime.NumCPU() }

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func parseFlags(args []string) (*config, error) {
	c := &config{}
	f := flag.NewFlagSet("bench", flag.ContinueOnError)
	var tools, scenarios, seqSize, partSize, multiSize, bigWrite string
	f.IntVar(&c.runs, "runs", 3, "runs per phase and tool; the report shows medians")
	f.BoolVar(&c.quick, "quick", false, "small sizes for development: 256 MiB, 200 files, 2,000 objects")
	f.StringVar(&c.server, "server", "emulator", "S3 server: emulator (cosmount-emulator serve) or versitygw")
	f.StringVar(&c.binDir, "bin", "bin", "directory holding the cosmount and cosmount-emulator binaries")
	f.StringVar(&c.outDir, "out", "_output/bench", "directory for results.md, results.json and logs")
	f.StringVar(&tools, "tools", "sdk,cosmount,cosmount-bearer,s3fs,rclone", "tools to compare (sdk, cosmount, cosmount-bearer, s3fs, rclone)")
	f.StringVar(&scenarios, "scenarios", strings.Join(allScenarios, ","),
		"scenarios to run: seq (write and cold read of one file), small (many small files written, then read by name on a cold mount), "+
			"ls (ls -l of a large directory), reread (a second read of the seq file in the same mount, without and with each tool's cache), "+
			"multi (several readers of as many files at once), bigwrite (cosmount's peak RSS writing a large file)")
	f.StringVar(&seqSize, "seq-size", "", "size of the sequential file (default 1GiB, 256MiB with --quick)")
	f.IntVar(&c.smallFiles, "small-files", 0, "number of small files (default 1000, 200 with --quick)")
	f.IntVar(&c.smallSize, "small-size", 4096, "size of each small file in bytes")
	f.IntVar(&c.lsObjects, "ls-objects", 0, "objects in the ls -l directory (default 10000, 2000 with --quick)")
	f.StringVar(&partSize, "part-size", "8MiB", "multipart part size and ranged-GET size of cosmount and the SDK")
	f.IntVar(&c.concurrency, "concurrency", 4, "parts in flight for cosmount and the SDK")
	f.BoolVar(&c.keep, "keep", false, "keep the work directory (server data, mount logs) for inspection")
	f.IntVar(&c.multiFiles, "multi-files", 8, "readers (one file each) of the multi scenario")
	f.StringVar(&multiSize, "multi-size", "", "size of each file of the multi scenario (default 128MiB, 32MiB with --quick)")
	f.StringVar(&bigWrite, "big-write", "", "size of the bigwrite scenario's file (default 4GiB, 1GiB with --quick)")
	f.BoolVar(&c.profile, "profile", false, "write CPU and allocation profiles of every cosmount server next to its log (<out>/logs/*-PHASE.{cpu,alloc}.pprof)")
	if err := f.Parse(args); err != nil {
		return nil, err
	}
	var err error
	if c.partSize, err = volume.ParseSize(partSize); err != nil {
		return nil, fmt.Errorf("--part-size: %w", err)
	}
	if seqSize == "" {
		seqSize = "1GiB"
		if c.quick {
			seqSize = "256MiB"
		}
	}
	if c.seqSize, err = volume.ParseSize(seqSize); err != nil || c.seqSize <= 0 {
		return nil, fmt.Errorf("--seq-size %q: want a positive size", seqSize)
	}
	if multiSize == "" {
		multiSize = "128MiB"
		if c.quick {
			multiSize = "32MiB"
		}
	}
	if c.multiSize, err = volume.ParseSize(multiSize); err != nil || c.multiSize <= 0 {
		return nil, fmt.Errorf("--multi-size %q: want a positive size", multiSize)
	}
	if bigWrite == "" {
		bigWrite = "4GiB"
		if c.quick {
			bigWrite = "1GiB"
		}
	}
	if c.bigWrite, err = volume.ParseSize(bigWrite); err != nil || c.bigWrite <= 0 {
		return nil, fmt.Errorf("--big-write %q: want a positive size", bigWrite)
	}
	if c.smallFiles == 0 {
		c.smallFiles = pick(c.quick, 200, 1000)
	}
	if c.lsObjects == 0 {
		c.lsObjects = pick(c.quick, 2000, 10000)
	}
	c.tools = splitList(tools)
	c.scenarios = splitList(scenarios)
	switch {
	case c.runs < 1:
		return nil, errors.New("--runs must be at least 1")
	case c.concurrency < 1:
		return nil, errors.New("--concurrency must be at least 1")
	case c.partSize < 5<<20:
		return nil, errors.New("--part-size must be at least 5MiB (S3's minimum part)")
	case c.smallSize < 1 || c.smallSize > poolSize/2 || c.smallFiles > 99999 || c.lsObjects > 99999:
		return nil, errors.New("--small-size, --small-files or --ls-objects out of range")
	}
	for _, s := range c.scenarios {
		if !slices.Contains(allScenarios, s) {
			return nil, fmt.Errorf("unknown scenario %q (want %s)", s, strings.Join(allScenarios, ", "))
		}
	}
	if c.multiFiles < 1 || c.multiFiles > 64 {
		return nil, errors.New("--multi-files must be between 1 and 64")
	}
	if c.outDir, err = filepath.Abs(c.outDir); err != nil {
		return nil, err
	}
	if c.binDir, err = filepath.Abs(c.binDir); err != nil {
		return nil, err
	}
	return c, nil
}

func pick(quick bool, q, full int) int {
	if quick {
		return q
	}
	return full
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	cl := &cleanups{}
	finished := make(chan struct{})
	go func() {
		// On a signal the main flow stops at its next check; if it is stuck
		// in a syscall on a hung mount, tear everything down from here.
		select {
		case <-finished:
			return
		case <-ctx.Done():
		}
		logf("interrupted: cleaning up")
		select {
		case <-finished:
		case <-time.After(20 * time.Second):
			cl.runAll()
			os.Exit(130)
		}
	}()
	err = run(ctx, cfg, cl)
	cl.runAll()
	close(finished)
	if err != nil {
		logf("FAILED: %v", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg *config, cl *cleanups) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: FUSE mounts of s3fs/rclone and dropping the page cache need it")
	}
	for _, b := range []string{"cosmount", "cosmount-emulator"} {
		if _, err := os.Stat(filepath.Join(cfg.binDir, b)); err != nil {
			return fmt.Errorf("%s not found in %s: run `make build` first (%w)", b, cfg.binDir, err)
		}
	}
	if err := os.MkdirAll(filepath.Join(cfg.outDir, "logs"), 0o755); err != nil {
		return err
	}
	if err := ensurePeers(ctx, cfg.tools); err != nil {
		return err
	}
	if err := dropCaches(); err != nil {
		return fmt.Errorf("cannot drop the page cache: %w", err)
	}
	workDir, err := os.MkdirTemp("", "cosmount-bench-")
	if err != nil {
		return err
	}
	if cfg.keep {
		logf("work directory (kept): %s", workDir)
	} else {
		cl.add(func() { _ = os.RemoveAll(workDir) })
	}
	srv, err := startServer(ctx, cfg, workDir, cl)
	if err != nil {
		return err
	}
	logf("%s serving at %s (pid %d)", srv.kind, srv.endpoint, srv.proc.PID())
	client, err := cos.New(cos.Options{Endpoint: srv.endpoint, Region: srv.region, UsePathStyle: true,
		HMAC: &cos.HMAC{AccessKeyID: hmacAccessKey, SecretAccessKey: hmacSecretKey}, Version: "bench"})
	if err != nil {
		return err
	}
	b := &bench{
		cfg: cfg, srv: srv, client: client, payload: newPayload(), cl: cl,
		probe: &probe{c: client, requests: map[string]int{}},
		ts:    &toolSet{cfg: cfg, srv: srv, sdk: client, workDir: workDir, cl: cl},
		res:   results{},
	}
	var tools []*tool
	for _, name := range cfg.tools {
		t, err := b.ts.tool(name)
		if err != nil {
			return err
		}
		tools = append(tools, t)
	}
	env := peerVersions(ctx)
	start := time.Now()
	runErr := b.runAll(ctx, tools)
	logf("benchmark took %s", time.Since(start).Round(time.Second))
	if ctx.Err() != nil {
		return ctx.Err()
	}
	md := markdown(cfg, env, b.res, cfg.tools)
	fmt.Print(md)
	if err := os.WriteFile(filepath.Join(cfg.outDir, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	js, err := json.MarshalIndent(map[string]any{
		"date": time.Now().UTC().Format(time.RFC3339), "server": cfg.server, "runs": cfg.runs,
		"seqBytes": cfg.seqSize, "smallFiles": cfg.smallFiles, "smallBytes": cfg.smallSize,
		"lsObjects": cfg.lsObjects, "partSize": cfg.partSize, "concurrency": cfg.concurrency,
		"multiFiles": cfg.multiFiles, "multiBytes": cfg.multiSize, "bigWriteBytes": cfg.bigWrite,
		"environment": env, "samples": b.res,
	}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cfg.outDir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	logf("wrote %s and results.json", filepath.Join(cfg.outDir, "results.md"))
	return runErr
}
