package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/cos"
)

// abortUploadsTimeout bounds `cosmount abort-uploads` and the start-up cleanup.
const abortUploadsTimeout = 2 * time.Minute

// openJournal opens --upload-journal, if given.
func openJournal(f *mountFlags) (*cos.UploadJournal, error) {
	if f.uploadJournal == "" {
		return nil, nil
	}
	j, err := cos.OpenUploadJournal(f.uploadJournal)
	if err != nil {
		return nil, fmt.Errorf("--upload-journal: %w", err)
	}
	return j, nil
}

// abortLeftUploads aborts the uploads an earlier server with the same
// journal started and did not finish (it crashed or was killed). Failures
// are logged and the uploads stay listed for the next start or
// `cosmount abort-uploads`; they do not stop the mount.
func abortLeftUploads(ctx context.Context, j *cos.UploadJournal, c *cos.Client) {
	if j == nil {
		return
	}
	pending := len(j.Pending())
	if pending == 0 {
		return
	}
	n, err := j.AbortPending(ctx, c)
	if err != nil {
		klog.ErrorS(err, "Some multipart uploads of an earlier server could not be aborted; they stay in the journal", "aborted", n, "left", pending-n)
		return
	}
	klog.InfoS("Aborted the multipart uploads an earlier server left unfinished", "count", n)
}

// runAbortUploads is `cosmount abort-uploads [flags] --upload-journal FILE
// BUCKET[:/PREFIX]`: it aborts every upload the journal lists (those of a
// server that crashed) and clears them. It exits 0 when the journal lists
// nothing any more, also when the file does not exist. It takes the
// endpoint and authentication flags of mount (other mount flags are
// accepted and ignored) and refuses a journal a live server holds.
func runAbortUploads(args []string) error {
	f, pos, err := parseMountFlags(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || f.uploadJournal == "" {
		return errors.New("usage: cosmount abort-uploads [endpoint and auth flags of mount] --upload-journal FILE BUCKET[:/PREFIX]")
	}
	if _, _, err := parseSource(pos[0]); err != nil {
		return err
	}
	if _, err := os.Stat(f.uploadJournal); errors.Is(err, os.ErrNotExist) {
		fmt.Println("cosmount abort-uploads: no journal, nothing to abort")
		return nil
	}
	if f.endpoint == "" {
		return errors.New("--endpoint is required")
	}
	auth, err := resolveAuth(f)
	if err != nil {
		return err
	}
	j, err := openJournal(f)
	if err != nil {
		return err
	}
	defer j.Close()
	pending := len(j.Pending())
	if pending == 0 {
		fmt.Println("cosmount abort-uploads: the journal lists no unfinished upload")
		return nil
	}
	c, tokens, err := newClient(f, auth, newMountMetrics(), nil)
	if err != nil {
		return err
	}
	if tokens != nil {
		defer tokens.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), abortUploadsTimeout)
	defer cancel()
	n, err := j.AbortPending(ctx, c)
	fmt.Printf("cosmount abort-uploads: aborted %d of %d unfinished uploads\n", n, pending)
	if err != nil {
		return fmt.Errorf("%d uploads could not be aborted and stay in the journal: %w", pending-n, err)
	}
	return nil
}
