package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cosmount/cosmount/internal/testproc"
	"github.com/cosmount/cosmount/pkg/cos"
)

// tool is one way of reaching the bucket: the SDK alone or a FUSE filesystem.
type tool struct {
	name string
	// mount starts a FUSE server for bucket on mnt in the foreground (so
	// that its PID is the serving process); nil for the SDK. With cacheDir
	// the tool caches what it reads there (its own read cache).
	mount func(ctx context.Context, bucket, mnt, logPath, cacheDir string) (*testproc.Process, error)
}

func (t *tool) fuse() bool { return t.mount != nil }

// session is one mount (or, for the SDK, one client) used for one phase.
type session struct {
	tool   *tool
	mnt    string            // FUSE mountpoint; "" for the SDK
	proc   *testproc.Process // FUSE server process; nil for the SDK
	bucket *cos.Bucket       // the SDK's bucket handle
	// profile is the path prefix of the server's CPU and allocation
	// profiles (--profile, cosmount only); "" when not profiled.
	profile string
	close   func()
}

// pid is the process whose CPU time and peak RSS are charged to the tool:
// the FUSE server, or the benchmark itself for the SDK.
func (s *session) pid() int {
	if s.proc != nil {
		return s.proc.PID()
	}
	return os.Getpid()
}

// toolSet builds the tools by name.
type toolSet struct {
	cfg     *config
	srv     *s3Server
	sdk     *cos.Client
	workDir string
	cl      *cleanups
	seq     atomic.Int64
}

func (ts *toolSet) tool(name string) (*tool, error) {
	switch name {
	case "sdk":
		return &tool{name: name}, nil
	case "cosmount":
		return &tool{name: name, mount: ts.mountCosmount(false)}, nil
	case "cosmount-bearer":
		if ts.srv.iamURL == "" {
			return nil, fmt.Errorf("tool cosmount-bearer needs the emulator's IAM (not available with --server %s)", ts.srv.kind)
		}
		return &tool{name: name, mount: ts.mountCosmount(true)}, nil
	case "s3fs":
		return &tool{name: name, mount: ts.mountS3fs}, nil
	case "rclone":
		return &tool{name: name, mount: ts.mountRclone}, nil
	}
	return nil, fmt.Errorf("unknown tool %q (want sdk, cosmount, cosmount-bearer, s3fs, rclone)", name)
}

// open mounts bucket (or opens it through the SDK) for one phase. The
// returned session's close unmounts and waits for the server to exit. With
// cached the tool reads through its own read cache, in a fresh directory.
func (ts *toolSet) open(ctx context.Context, t *tool, bucket string, cached bool) (*session, error) {
	if !t.fuse() {
		return &session{tool: t, bucket: ts.sdk.Bucket(bucket), close: func() {}}, nil
	}
	n := ts.seq.Add(1)
	mnt := filepath.Join(ts.workDir, fmt.Sprintf("mnt-%s-%d", t.name, n))
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return nil, err
	}
	cacheDir := ""
	if cached {
		cacheDir = filepath.Join(ts.workDir, fmt.Sprintf("cache-%s-%d", t.name, n))
		if err := os.MkdirAll(cacheDir, 0o700); err != nil {
			return nil, err
		}
		// Removed after the unmount (cleanups run newest first).
		ts.cl.add(func() { _ = os.RemoveAll(cacheDir) })
	}
	logPath := filepath.Join(ts.cfg.outDir, "logs", fmt.Sprintf("%s-%03d-%s.log", t.name, n, bucket))
	profile := ""
	if ts.cfg.profile && strings.HasPrefix(t.name, "cosmount") {
		profile = strings.TrimSuffix(logPath, ".log")
	}
	p, err := t.mount(ctx, bucket, mnt, logPath, cacheDir)
	if err != nil {
		return nil, err
	}
	closeFn := ts.cl.add(func() {
		if err := fuseUnmount(mnt); err != nil {
			logf("%v", err)
		}
		// The servers exit by themselves once the kernel released the mount.
		select {
		case <-p.Done():
		case <-time.After(2 * time.Minute):
			logf("%s did not exit after unmount; stopping it", p.Name)
		}
		p.Stop(30 * time.Second)
		_ = os.Remove(mnt)
	})
	if err := testproc.WaitMounted(ctx, p, mnt, "", true, 2*time.Minute); err != nil {
		closeFn()
		return nil, fmt.Errorf("%w (log: %s)", err, logPath)
	}
	return &session{tool: t, mnt: mnt, proc: p, profile: profile, close: closeFn}, nil
}

// secretFile writes a credentials file readable only by its owner; secrets
// never go on a command line.
func (ts *toolSet) secretFile(name, content string) (string, error) {
	p := filepath.Join(ts.workDir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		return "", err
	}
	return p, nil
}

func (ts *toolSet) mountCosmount(bearer bool) func(context.Context, string, string, string, string) (*testproc.Process, error) {
	return func(ctx context.Context, bucket, mnt, logPath, cacheDir string) (*testproc.Process, error) {
		args := []string{filepath.Join(ts.cfg.binDir, "cosmount"), "mount", "--foreground",
			"--endpoint", ts.srv.endpoint, "--region", ts.srv.region}
		if bearer {
			f, err := ts.secretFile("apikey", emulatorAPIKey+"\n")
			if err != nil {
				return nil, err
			}
			args = append(args, "--api-key-file", f, "--iam-endpoint", ts.srv.iamURL)
		} else {
			f, err := ts.secretFile("hmac", hmacAccessKey+":"+hmacSecretKey+"\n")
			if err != nil {
				return nil, err
			}
			args = append(args, "--hmac-credentials-file", f)
		}
		// The SDK ceiling uses the same part size and concurrency.
		opts := fmt.Sprintf("part_size=%d,upload_concurrency=%d", ts.cfg.partSize, ts.cfg.concurrency)
		if cacheDir != "" {
			// A node-local disk cache with room for the file read again.
			opts += fmt.Sprintf(",cache_dir=%s,cache_size=%d", cacheDir, ts.cfg.seqSize+ts.cfg.seqSize/2)
		}
		args = append(args, "-o", opts, bucket, mnt)
		env := os.Environ()
		if ts.cfg.profile {
			// Written by the server when it exits (cmd/cosmount/debug.go).
			base := strings.TrimSuffix(logPath, ".log")
			env = append(env, "COSMOUNT_DEBUG_CPU_PROFILE="+base+".cpu.pprof",
				"COSMOUNT_DEBUG_ALLOC_PROFILE="+base+".alloc.pprof")
		}
		return startProc(filepath.Base(args[0]), logPath, env, args...)
	}
}

// mountS3fs runs s3fs with its Debian defaults, only pointed at the server.
func (ts *toolSet) mountS3fs(ctx context.Context, bucket, mnt, logPath, cacheDir string) (*testproc.Process, error) {
	f, err := ts.secretFile("s3fs-passwd", hmacAccessKey+":"+hmacSecretKey+"\n")
	if err != nil {
		return nil, err
	}
	opts := "url=" + ts.srv.endpoint + ",use_path_request_style,passwd_file=" + f
	if ts.srv.region != "us-east-1" {
		opts += ",endpoint=" + ts.srv.region
	}
	if cacheDir != "" {
		opts += ",use_cache=" + cacheDir
	}
	return startProc("s3fs", logPath, os.Environ(), "s3fs", bucket, mnt, "-f", "-o", opts)
}

// mountRclone runs rclone with the flags that make its uploads start at
// close and its directory cache short (see TEST-ENVIRONMENT.md). Each mount
// gets a fresh cache directory, so a read after a remount comes from the
// server and not from the previous mount's write cache.
func (ts *toolSet) mountRclone(ctx context.Context, bucket, mnt, logPath, readCache string) (*testproc.Process, error) {
	conf := strings.Join([]string{
		"[bench]",
		"type = s3",
		"provider = Other",
		"endpoint = " + ts.srv.endpoint,
		"force_path_style = true",
		"access_key_id = " + hmacAccessKey,
		"secret_access_key = " + hmacSecretKey,
		"region = " + ts.srv.region,
		"",
	}, "\n")
	f, err := ts.secretFile("rclone.conf", conf)
	if err != nil {
		return nil, err
	}
	cacheDir, err := os.MkdirTemp(ts.workDir, "rclone-cache-")
	if err != nil {
		return nil, err
	}
	ts.cl.add(func() { _ = os.RemoveAll(cacheDir) })
	// Debian's rclone fails on the machine-wide AWS_CA_BUNDLE.
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "AWS_CA_BUNDLE=") {
			env = append(env, e)
		}
	}
	mode := "writes"
	if readCache != "" {
		// Its cache directory is where it keeps what it read.
		mode, cacheDir = "full", readCache
	}
	return startProc("rclone", logPath, env, "rclone", "--config", f, "mount", "bench:"+bucket, mnt,
		"--vfs-cache-mode", mode, "--vfs-write-back", "0s", "--dir-cache-time", "1s",
		"--cache-dir", cacheDir)
}

// ensurePeers installs s3fs and rclone from Debian if a requested one is missing.
func ensurePeers(ctx context.Context, names []string) error {
	var missing []string
	for _, n := range names {
		if n != "s3fs" && n != "rclone" {
			continue
		}
		if _, err := exec.LookPath(n); err != nil {
			missing = append(missing, n)
		}
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		missing = append(missing, "fuse3")
	}
	if len(missing) == 0 {
		return nil
	}
	logf("installing %s with apt-get", strings.Join(missing, " "))
	install := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", append([]string{"install", "-y", "--no-install-recommends"}, missing...)...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		return cmd.Run()
	}
	if err := install(); err != nil {
		update := exec.CommandContext(ctx, "apt-get", "update")
		update.Stdout, update.Stderr = os.Stderr, os.Stderr
		if uerr := update.Run(); uerr != nil {
			return fmt.Errorf("apt-get update: %w", uerr)
		}
		if err := install(); err != nil {
			return fmt.Errorf("apt-get install %s: %w", strings.Join(missing, " "), err)
		}
	}
	return nil
}

// peerVersions reports the versions of the peers, for the record.
func peerVersions(ctx context.Context) map[string]string {
	v := map[string]string{}
	run := func(name string, args ...string) {
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if err != nil {
			return
		}
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		v[name] = line
	}
	run("s3fs", "--version")
	run("rclone", "version")
	run("go", "version")
	if out, err := exec.CommandContext(ctx, "git", "describe", "--tags", "--always", "--dirty").Output(); err == nil {
		v["cosmount"] = strings.TrimSpace(string(out))
	}
	v["cpus"] = strconv.Itoa(numCPU())
	return v
}
