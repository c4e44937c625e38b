package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/fs"
	"github.com/cosmount/cosmount/pkg/iam"
	"github.com/cosmount/cosmount/pkg/volume"
)

// flushTimeout bounds the upload of dirty data when the process is told to stop.
const flushTimeout = 5 * time.Minute

func runMount(args []string) error {
	f, pos, err := parseMountFlags(args)
	if err != nil {
		return err
	}
	if f.foreground {
		closeLog, err := setupLogging(f)
		if err != nil {
			return err
		}
		defer closeLog()
		if len(f.ignoredOptions) > 0 {
			klog.V(2).InfoS("Ignoring mount(8) options that mean nothing to cosmount", "options", f.ignoredOptions)
		}
	}
	if len(pos) != 2 {
		return errors.New("usage: cosmount mount [flags] BUCKET[:/PREFIX] MOUNTPOINT (see cosmount mount -h)")
	}
	bucket, prefix, err := parseSource(pos[0])
	if err != nil {
		return err
	}
	mountpoint := pos[1]
	if st, err := os.Stat(mountpoint); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("mountpoint %s does not exist", mountpoint)
		}
		return fmt.Errorf("mountpoint %s: %w", mountpoint, err)
	} else if !st.IsDir() {
		return fmt.Errorf("mountpoint %s is not a directory", mountpoint)
	}
	mo, err := volume.ParseOptions(strings.Join(f.options, ","))
	if err != nil {
		return fmt.Errorf("-o: %w", err)
	}
	// The source as given names the mount in the mount table, so that
	// mount -a recognises an fstab line as mounted.
	opts := fs.Options{Options: mo, FSName: pos[0]}
	if prefix != "" {
		if opts.Prefix != "" {
			return errors.New("the prefix is given twice: in BUCKET:/PREFIX and in -o prefix=")
		}
		opts.Prefix = prefix
	}
	if f.endpoint == "" {
		return errors.New("--endpoint is required (the COS endpoint URL, e.g. https://s3.us-south.cloud-object-storage.appdomain.cloud)")
	}
	auth, err := resolveAuth(f)
	if err != nil {
		return err
	}
	if !f.foreground {
		return detach(f.startTimeout, append([]string{"mount", "--foreground"}, f.canonical...), f.logFile)
	}
	tuneGC(opts.MemoryLimit, opts.CacheMemory)
	ready := newReadyReporter()
	detached := ready.f != nil
	err = serve(f, auth, bucket, mountpoint, opts, ready)
	ready.report(err) // no-op once ready was reported
	if err != nil && detached {
		// The parent prints it; this process's stderr is the same terminal.
		klog.ErrorS(err, "mount failed")
		return errReported
	}
	return err
}

// errReported ends a detached child whose error its parent already printed.
var errReported = errors.New("reported to the parent process")

// serve mounts and serves until SIGTERM/SIGINT or an external unmount.
func serve(f *mountFlags, auth *authConfig, bucket, mountpoint string, opts fs.Options, ready *readyReporter) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	stopProfiling, err := startProfiling()
	if err != nil {
		return err
	}
	defer stopProfiling()

	metrics := newMountMetrics()
	journal, err := openJournal(f)
	if err != nil {
		return err
	}
	if journal != nil {
		defer journal.Close()
	}
	client, tokens, err := newClient(f, auth, metrics, journal)
	if err != nil {
		return err
	}
	if tokens != nil {
		defer tokens.Close()
		metrics.watchTokens(tokens.Expiry)
	}
	setupCtx, cancel := context.WithTimeout(ctx, f.startTimeout)
	defer cancel()
	if err := checkAccess(setupCtx, client, tokens, auth, bucket, f); err != nil {
		return err
	}
	abortLeftUploads(setupCtx, journal, client)
	if f.metricsAddress != "" {
		stopMetrics, err := metrics.serve(f.metricsAddress)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	opts.Ops = metrics
	m, err := fs.Mount(setupCtx, mountpoint, client.Bucket(bucket), opts)
	if err != nil {
		return err
	}
	metrics.serving(m.FS())
	if f.controlSocket != "" {
		ctl := &controlServer{metrics: metrics, fs: m.FS(), life: ctx}
		stopSocket, err := serveControl(f.controlSocket, ctl.handler())
		if err != nil {
			_ = m.Unmount()
			return errors.Join(err, m.Wait())
		}
		defer stopSocket()
	}
	klog.InfoS("cosmount serving", "bucket", bucket, "prefix", opts.Prefix, "mountpoint", mountpoint, "auth", auth.method(), "pid", os.Getpid())
	ready.report(nil)

	select {
	case <-m.Done():
		// Unmounted from outside (cosmount unmount, umount, fusermount3 -u).
		return m.Wait()
	case <-ctx.Done():
	}
	klog.InfoS("stopping: flushing dirty files, then unmounting", "mountpoint", mountpoint)
	flushCtx, cancelFlush := context.WithTimeout(context.Background(), flushTimeout)
	defer cancelFlush()
	flushErr := m.Flush(flushCtx)
	if flushErr != nil {
		klog.ErrorS(flushErr, "flushing before unmount failed; unmounting anyway so the node is not left with a hung mount")
	}
	if err := m.Unmount(); err != nil {
		// Busy (a process still has files open): detach lazily so the
		// mountpoint is freed as soon as they close.
		klog.ErrorS(err, "unmount failed, detaching lazily", "mountpoint", mountpoint)
		if lerr := syscall.Unmount(mountpoint, syscall.MNT_DETACH); lerr != nil {
			return errors.Join(flushErr, err, lerr)
		}
	}
	return errors.Join(flushErr, m.Wait())
}

// newClient builds the COS client for the chosen authentication. For IAM
// methods it also returns the caching token source, so that the caller can
// close it.
func newClient(f *mountFlags, auth *authConfig, metrics *mountMetrics, journal *cos.UploadJournal) (*cos.Client, *iam.CachingSource, error) {
	opts := cos.Options{
		Endpoint:     f.endpoint,
		Region:       f.region,
		UsePathStyle: !f.virtualHost,
		Observer:     metrics,
	}
	if journal != nil {
		opts.Uploads = journal
	}
	switch {
	case auth.hmacFile != "":
		opts.HMACFile = auth.hmacFile
		c, err := cos.New(opts)
		return c, nil, err
	case auth.hmacID != "":
		opts.HMAC = &cos.HMAC{AccessKeyID: auth.hmacID, SecretAccessKey: auth.hmacSecret}
		c, err := cos.New(opts)
		return c, nil, err
	}
	ex, err := iam.NewClient(iam.ClientOptions{BaseURL: f.iamEndpoint})
	if err != nil {
		return nil, nil, fmt.Errorf("--iam-endpoint: %w", err)
	}
	var raw iam.Source
	if auth.crTokenFile != "" {
		raw, err = iam.NewTrustedProfileSource(iam.TrustedProfileOptions{
			Exchanger: ex,
			TokenFile: auth.crTokenFile,
			Profile:   iam.Profile{ID: auth.profileID, Name: auth.profileName, CRN: auth.profileCRN},
		})
	} else if auth.apiKeyFile != "" {
		raw, err = iam.NewAPIKeyFileSource(ex, auth.apiKeyFile)
	} else {
		raw, err = iam.NewAPIKeySource(ex, auth.apiKey)
	}
	if err != nil {
		return nil, nil, err
	}
	tokens := iam.NewCachingSource(raw, iam.CachingOptions{OnRefresh: metrics.tokenRefreshed})
	opts.Tokens = tokens
	c, err := cos.New(opts)
	if err != nil {
		tokens.Close()
		return nil, nil, err
	}
	return c, tokens, nil
}

// checkAccess turns the two most common set-up mistakes into clear errors
// before anything is mounted: IAM refusing the identity, and a bucket that
// does not exist or may not be used.
func checkAccess(ctx context.Context, c *cos.Client, tokens *iam.CachingSource, auth *authConfig, bucket string, f *mountFlags) error {
	if tokens != nil {
		if _, err := tokens.Token(ctx); err != nil {
			switch {
			case errors.Is(err, iam.ErrNotEligible):
				return fmt.Errorf("IAM refused the trusted profile for this token (the profile does not trust this cluster, namespace or service account): %w", err)
			case errors.Is(err, iam.ErrBadCredentials):
				return fmt.Errorf("IAM refused the %s: %w", auth.method(), err)
			default:
				return fmt.Errorf("getting an IAM token from %s: %w", f.iamEndpoint, err)
			}
		}
	}
	err := c.HeadBucket(ctx, bucket)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, cos.ErrNotFound):
		return fmt.Errorf("bucket %q does not exist at %s", bucket, f.endpoint)
	case errors.Is(err, cos.ErrAccessDenied):
		return fmt.Errorf("access to bucket %q denied (check the policies of the %s): %w", bucket, auth.method(), err)
	default:
		return fmt.Errorf("checking bucket %q at %s: %w", bucket, f.endpoint, err)
	}
}

// unmount unmounts a cosmount mountpoint; the server process then exits on
// its own after the kernel has released the mount.
func unmount(ctx context.Context, mountpoint string) error {
	if err := syscall.Unmount(mountpoint, 0); err != nil {
		switch err {
		case syscall.EINVAL:
			return fmt.Errorf("%s is not a mountpoint", mountpoint)
		case syscall.EBUSY:
			return fmt.Errorf("%s is busy: a process still uses files in it", mountpoint)
		case syscall.ENOENT:
			return fmt.Errorf("%s does not exist", mountpoint)
		case syscall.EPERM:
			// Not root: ask the setuid helper, which checks the caller owns the mount.
			return fusermountUnmount(ctx, mountpoint)
		}
		return fmt.Errorf("unmount %s: %w", mountpoint, err)
	}
	return nil
}
