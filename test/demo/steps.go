package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/emulator"
	"github.com/cosmount/cosmount/pkg/mounterapi"
)

// The second half of the story: the write, the proof, the refusal and the
// teardown; and the cleanup that runs whatever happened.

func (d *demo) podWrites(ctx context.Context) error {
	var err error
	if d.writeMark, err = d.auditLen(ctx); err != nil {
		return err
	}
	target := d.writerReq.TargetPath
	d.say(`$ sh -c 'echo "hello world" > %s/%s'`, target, objectKey)
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	// The target is passed as $1, not pasted into the script.
	cmd := exec.CommandContext(ctx, "sh", "-c", `echo "hello world" > "$1/`+objectKey+`"`, "sh", target)
	cmd.Dir = "/"
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("the shell failed: %v: %s", err, out)
	}
	d.say("exit status 0: close() returned only after the upload succeeded")
	st, err := os.Stat(filepath.Join(target, objectKey))
	if err != nil {
		return err
	}
	d.say("the pod sees %s: %d bytes, %v", objectKey, st.Size(), st.Mode())
	return nil
}

func (d *demo) readBack(ctx context.Context) error {
	// A different identity from the pod's: the emulator's HMAC key, as an
	// administrator would use, so the read proves what is in the bucket.
	c, err := cos.New(cos.Options{
		Endpoint:     d.cosURL,
		UsePathStyle: true,
		HMAC:         &cos.HMAC{AccessKeyID: emulator.DefaultHMACAccessKeyID, SecretAccessKey: emulator.DefaultHMACSecretKey},
	})
	if err != nil {
		return err
	}
	d.say("GET /%s/%s with pkg/cos, signed (SigV4) with the emulator's administrator HMAC key:", bucket, objectKey)
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	body, info, err := c.GetObject(ctx, bucket, objectKey, cos.GetOptions{})
	if err != nil {
		return err
	}
	data, err := io.ReadAll(body)
	body.Close()
	if err != nil {
		return err
	}
	d.say("  %d bytes: %q  (ETag %s)", len(data), data, info.ETag)
	if string(data) != objectContent {
		return fmt.Errorf("the object holds %q, want %q", data, objectContent)
	}
	entries, err := auditEntries(ctx, d.cosURL, d.writeMark)
	if err != nil {
		return err
	}
	d.say("the emulator's audit of %s since the pod's write:", objectKey)
	found := false
	for _, e := range entries {
		if e.Service != "cos" || e.Key != objectKey {
			continue
		}
		// One PUT: the redirection's first close (sh dup2s the file to
		// stdout and closes the original before echo writes) uploads nothing.
		mark := " "
		if e.Operation == "PutObject" && e.Status == 200 && e.AuthScheme == "bearer" && e.PrincipalID == profileID &&
			e.Bytes == int64(len(objectContent)) {
			mark, found = "*", true
		}
		d.say("%s %s", mark, formatAudit(e))
	}
	if !found {
		return fmt.Errorf("the audit shows no bearer PutObject of %s by %s", objectKey, profileID)
	}
	d.say("* the pod's write: a PUT with a bearer token of trusted profile %s, no key in the cluster", profileID)
	return nil
}

func (d *demo) refused(ctx context.Context) error {
	intruder := &pod{name: "intruder-pod", namespace: untrustedNamespace, serviceAccount: "default",
		tokenFile: filepath.Join(d.work, "intruder-pod.token"), volumeID: "pv-intruder"}
	claims, err := d.mintToken(ctx, intruder)
	if err != nil {
		return err
	}
	d.say("  namespace %s, serviceaccount %s, pod %s",
		claims.Kubernetes.Namespace, claims.Kubernetes.ServiceAccount.Name, claims.Kubernetes.Pod.Name)
	req, err := volume{bucket, d.cosURL, d.iamURL, profileID}.publishRequest(d.kubeletDir(), intruder, claims, audience)
	if err != nil {
		return err
	}
	mark, err := d.auditLen(ctx)
	if err != nil {
		return err
	}
	d.say("NodePublishVolume volume_id=%s, same bucket and profile %s", req.VolumeId, profileID)
	d.published = append(d.published, req)
	rpcCtx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	_, err = d.node.NodePublishVolume(rpcCtx, req)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "BXNIM0398E") {
		return fmt.Errorf("NodePublishVolume = %v, want PermissionDenied naming BXNIM0398E", err)
	}
	d.say("-> %s: %s", status.Code(err), status.Convert(err).Message())
	if _, err := os.Stat(req.TargetPath); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("the refused target exists (%v)", err)
	}
	mounts, err := mountsUnder(filepath.Dir(req.TargetPath))
	if err != nil {
		return err
	}
	if len(mounts) != 0 {
		return fmt.Errorf("the refused pod got a mount: %v", mounts)
	}
	d.say("   nothing was mounted and no target was created")
	entries, err := auditEntries(ctx, d.cosURL, mark)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Service == "iam" {
			d.say("   IAM audit: %s", formatAudit(e))
		}
	}
	return nil
}

func (d *demo) teardown(ctx context.Context) error {
	req := d.writerReq
	// The server logs into the mounter's log, one line each naming the volume.
	mlog, err := os.ReadFile(filepath.Join(d.work, "cosmount-mounter.log"))
	if err != nil {
		return err
	}
	if !bytes.Contains(mlog, []byte(`volumeID="`+req.VolumeId+`"`)) {
		return fmt.Errorf("the mounter's log has no line of the server of %s", req.VolumeId)
	}
	rpcCtx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	d.say("NodeUnpublishVolume volume_id=%s target=%s", req.VolumeId, req.TargetPath)
	for _, r := range d.published {
		if _, err := d.node.NodeUnpublishVolume(rpcCtx, &csi.NodeUnpublishVolumeRequest{VolumeId: r.VolumeId, TargetPath: r.TargetPath}); err != nil {
			return fmt.Errorf("NodeUnpublishVolume %s: %w", r.VolumeId, err)
		}
	}
	d.published = nil
	d.say("-> OK")
	if _, err := os.Stat(req.TargetPath); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("the target still exists (%v)", err)
	}
	if processRuns(d.serverPID) {
		return fmt.Errorf("the cosmount server (pid %d) still runs", d.serverPID)
	}
	if _, err := os.Stat(d.serverToken); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("the token file %s is still there (%v)", d.serverToken, err)
	}
	rel, _ := filepath.Rel(d.work, d.serverToken)
	d.say("   target removed, cosmount server pid %d exited, token file %s removed", d.serverPID, rel)

	d.conn.Close()
	d.conn, d.node = nil, nil
	d.mounterC.Close()
	d.mounterC = nil
	for _, p := range []**proc{&d.plugin, &d.mounter, &d.emulator} {
		pid := (*p).pid()
		err := (*p).stop(stopTimeout)
		name := (*p).name
		*p = nil
		if err != nil {
			return err
		}
		d.say("stopped %s (pid %d) with SIGTERM", name, pid)
	}

	mounts, err := mountsUnder(d.work)
	if err != nil {
		return err
	}
	if len(mounts) != 0 {
		return fmt.Errorf("mounts remain: %v", mounts)
	}
	if entries, err := os.ReadDir(d.stateDir()); err != nil || len(entries) != 0 {
		return fmt.Errorf("the mounter's state directory is not empty (%d entries, %v)", len(entries), err)
	}
	logs, _ := filepath.Glob(filepath.Join(d.work, "*.log"))
	for _, l := range logs {
		if err := checkNoToken(l); err != nil {
			return err
		}
	}
	d.say("no mount under %s, no state or token file; no token in the logs of the emulator, the plugin, the mounter and the server", d.work)
	return nil
}

// checkNoToken fails if the log at path holds anything JWT-shaped: every
// JWT starts with a base64 '{"'.
func checkNoToken(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if bytes.Contains(data, []byte("eyJ")) {
		return fmt.Errorf("%s contains a token", path)
	}
	return nil
}

// cleanup undoes whatever the steps left, in the order that loses nothing:
// unpublish (flushes), the plugin, any server it could not stop, the
// emulator, then the files. It runs after success too, where it only
// removes the working directory.
func (d *demo) cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var errs []error
	if d.plugin != nil || d.mounter != nil || d.emulator != nil {
		fmt.Fprintf(d.out, "\ncleaning up what the demo started:\n")
	}
	if d.node != nil {
		for _, r := range d.published {
			if err := d.unpublishRetrying(ctx, r); err != nil {
				errs = append(errs, fmt.Errorf("unpublish %s: %w", r.VolumeId, err))
			} else {
				d.say("NodeUnpublishVolume %s: OK", r.VolumeId)
			}
		}
	}
	if d.conn != nil {
		d.conn.Close()
	}
	if d.plugin != nil {
		if err := d.plugin.stop(stopTimeout); err != nil {
			errs = append(errs, err)
		} else {
			d.say("stopped cosmount-csi (pid %d)", d.plugin.pid())
		}
	}
	// Volumes the mounter still serves (the plugin could not unpublish
	// them): unpublish them at the mounter, then stop it.
	if d.mounterC != nil && d.mounter != nil && !d.mounter.Exited() {
		list, err := d.mounterC.List(ctx, &mounterapi.ListRequest{})
		if err != nil {
			errs = append(errs, err)
		} else {
			for _, v := range list.Volumes {
				if _, err := d.mounterC.Unpublish(ctx, &mounterapi.UnpublishRequest{Target: v.Target}); err != nil {
					errs = append(errs, fmt.Errorf("unmount %s: %w", v.Target, err))
				} else {
					d.say("stopped the cosmount server (pid %d) of %s", v.PID, v.Target)
				}
			}
		}
	}
	if d.mounterC != nil {
		d.mounterC.Close()
	}
	if d.mounter != nil {
		if err := d.mounter.stop(stopTimeout); err != nil {
			errs = append(errs, err)
		} else {
			d.say("stopped the mounter (pid %d)", d.mounter.pid())
		}
	}
	if d.emulator != nil {
		if err := d.emulator.stop(stopTimeout); err != nil {
			errs = append(errs, err)
		} else {
			d.say("stopped cosmount-emulator (pid %d)", d.emulator.pid())
		}
	}
	// Never remove a tree with a mount inside: that would delete through it.
	mounts, err := mountsUnder(d.work)
	switch {
	case err != nil:
		errs = append(errs, err)
	case len(mounts) != 0:
		errs = append(errs, fmt.Errorf("mounts remain, %s kept: %v", d.work, mounts))
	default:
		if err := os.RemoveAll(d.work); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(d.out, "\nremoved %s\n", d.work)
		}
	}
	return errors.Join(errs...)
}

// unpublishRetrying unpublishes like kubelet after an interrupted publish:
// while the plugin still works on the cancelled publish it answers Aborted,
// and kubelet retries.
func (d *demo) unpublishRetrying(ctx context.Context, r *csi.NodePublishVolumeRequest) error {
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	for {
		_, err := d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: r.VolumeId, TargetPath: r.TargetPath})
		if status.Code(err) != codes.Aborted {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}
