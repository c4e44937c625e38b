package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/emulator"
	"github.com/cosmount/cosmount/pkg/emulator/config"
	"github.com/cosmount/cosmount/pkg/emulator/cosserver"
)

const serveDoc = `Serves IBM Cloud IAM (POST /identity/token, GET /identity/keys) and IBM Cloud
Object Storage (the S3 API, path style) on two listeners until SIGTERM or
SIGINT. Without --config it runs the embedded default configuration (see
print-config): its pod-token issuer key is generated into --data-dir on first
start, and bucket test-bucket is created. Objects, buckets and the access-token
signing key persist in --data-dir, so a restart keeps data and keeps accepting
tokens it issued.

The COS listener also serves an unauthenticated admin API under /_emulator/
(audit log, fault injection, access-token lifetime); keep both listeners on
loopback. With --ready-file, the line "iam=URL cos=URL" is written to that file
once both listeners accept connections (useful with port 0).
`

type bucketFlags []emulator.BucketSpec

func (b *bucketFlags) String() string {
	var names []string
	for _, s := range *b {
		names = append(names, s.Name)
	}
	return strings.Join(names, ",")
}

func (b *bucketFlags) Set(v string) error {
	name, constraint, _ := strings.Cut(v, ":")
	if name == "" {
		return errors.New("want NAME or NAME:LOCATION_CONSTRAINT")
	}
	*b = append(*b, emulator.BucketSpec{Name: name, LocationConstraint: constraint})
	return nil
}

type serveFlags struct {
	configFile      string
	dataDir         string
	iamListen       string
	cosListen       string
	backend         string
	backendCredFile string
	backendRegion   string
	tokenLifetime   time.Duration
	auditFile       string
	readyFile       string
	domain          string
	minPartSize     int64
	buckets         bucketFlags
}

func runServe(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", serveDoc, stderr)
	var f serveFlags
	fs.StringVar(&f.configFile, "config", "", "configuration file (YAML or JSON; ${DATA_DIR} expands to --data-dir); default: the embedded configuration")
	fs.StringVar(&f.dataDir, "data-dir", "", "directory for objects and keys (created if missing; required)")
	fs.StringVar(&f.iamListen, "iam-listen", "127.0.0.1:8180", "IAM listen address (port 0: any free port)")
	fs.StringVar(&f.cosListen, "cos-listen", "127.0.0.1:8181", "COS listen address (port 0: any free port)")
	fs.StringVar(&f.backend, "backend", "", "URL of an external S3 server to store objects in instead of --data-dir (requests are re-signed with --backend-credentials-file)")
	fs.StringVar(&f.backendCredFile, "backend-credentials-file", "", "file with the backend's HMAC credentials: ACCESS_KEY_ID:SECRET_ACCESS_KEY on one line")
	fs.StringVar(&f.backendRegion, "backend-region", "us-east-1", "SigV4 region toward the backend")
	fs.DurationVar(&f.tokenLifetime, "access-token-lifetime", 0, "lifetime of IAM access tokens (at least 1s); default: the configuration's (1h)")
	fs.StringVar(&f.auditFile, "audit-file", "", "append every served request to this file as JSON lines")
	fs.StringVar(&f.readyFile, "ready-file", "", `write "iam=URL cos=URL" to this file once listening`)
	fs.StringVar(&f.domain, "domain", "", "enable virtual-host style: Host <bucket>.<domain> addresses the bucket")
	fs.Int64Var(&f.minPartSize, "min-part-size", 0, "minimum multipart part size in bytes (default 5 MiB, as COS)")
	fs.Var(&f.buckets, "bucket", "create bucket NAME[:LOCATION_CONSTRAINT] at start if missing (repeatable); default with the embedded configuration: test-bucket")
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	fs.Var(klogFlags.Lookup("v").Value, "v", "log verbosity")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if f.dataDir == "" {
		return usagef("--data-dir is required")
	}
	if f.tokenLifetime != 0 && f.tokenLifetime < time.Second {
		return usagef("--access-token-lifetime %s: must be at least 1s", f.tokenLifetime)
	}
	if (f.backend == "") != (f.backendCredFile == "") {
		return usagef("--backend and --backend-credentials-file go together")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return serve(ctx, f, stdout)
}

func serve(ctx context.Context, f serveFlags, stdout io.Writer) error {
	var (
		cfg *config.Config
		err error
	)
	if f.configFile != "" {
		cfg, err = emulator.LoadConfig(f.configFile, f.dataDir)
	} else {
		cfg, err = emulator.DefaultConfig(f.dataDir)
	}
	if err != nil {
		return err
	}
	if f.tokenLifetime != 0 {
		cfg.AccessTokenLifetime.Duration = f.tokenLifetime
	}
	opts := emulator.Options{
		DataDir:     f.dataDir,
		Buckets:     f.buckets,
		AuditFile:   f.auditFile,
		Domain:      f.domain,
		MinPartSize: f.minPartSize,
	}
	if f.backend != "" {
		if opts.Backend, err = backend(f); err != nil {
			return err
		}
	} else if len(opts.Buckets) == 0 && f.configFile == "" {
		opts.Buckets = emulator.DefaultBuckets()
	}
	em, err := emulator.New(cfg, opts)
	if err != nil {
		return err
	}
	defer em.Close()

	iamL, err := net.Listen("tcp", f.iamListen)
	if err != nil {
		return fmt.Errorf("iam listener: %w", err)
	}
	cosL, err := net.Listen("tcp", f.cosListen)
	if err != nil {
		_ = iamL.Close()
		return fmt.Errorf("cos listener: %w", err)
	}
	iamURL, cosURL := "http://"+iamL.Addr().String(), "http://"+cosL.Addr().String()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	// Serve owns the listeners from here on and closes them when it returns.
	go func() { errc <- em.Serve(ctx, iamL, cosL) }()
	klog.InfoS("Emulator listening", "iam", iamURL, "cos", cosURL, "dataDir", f.dataDir)
	fmt.Fprintf(stdout, "iam=%s cos=%s\n", iamURL, cosURL)
	if f.readyFile != "" {
		if err := writeReadyFile(f.readyFile, fmt.Sprintf("iam=%s cos=%s\n", iamURL, cosURL)); err != nil {
			cancel()
			return errors.Join(err, <-errc)
		}
	}
	err = <-errc
	klog.InfoS("Emulator stopped")
	return err
}

func backend(f serveFlags) (*cosserver.Backend, error) {
	u, err := url.Parse(f.backend)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, usagef("--backend %q: want an absolute URL such as http://127.0.0.1:7070", f.backend)
	}
	h, err := cos.ReadHMACFile(f.backendCredFile)
	if err != nil {
		return nil, fmt.Errorf("--backend-credentials-file: %w", err)
	}
	return &cosserver.Backend{URL: u, AccessKeyID: h.AccessKeyID, SecretAccessKey: h.SecretAccessKey, Region: f.backendRegion}, nil
}

// writeReadyFile writes atomically, so a script polling for the file never
// reads half a line.
func writeReadyFile(path, content string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("ready file: %w", err)
	}
	_, werr := tmp.WriteString(content)
	if err := errors.Join(werr, tmp.Close()); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("ready file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("ready file: %w", err)
	}
	return nil
}
