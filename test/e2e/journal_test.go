package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

// crashWithOpenUpload mounts with journal, starts a streaming upload of
// name, SIGKILLs the server in the middle and detaches the dead mount.
// It returns the journal's pending uploads.
func crashWithOpenUpload(t *testing.T, env *emulatortest.Env, journal, name string) []cos.PendingUpload {
	t.Helper()
	requireFUSE(t)
	s2, err := startServer(t, append(writerArgs(t, env), "--upload-journal", journal,
		"-o", "temp_dir="+t.TempDir()+",part_size=5MiB,multipart_threshold=5MiB", env.Bucket))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(s2.path(name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(bytes.Repeat([]byte("x"), 12<<20)); err != nil {
		t.Fatal(err)
	}
	ups, err := env.Emulator.Store().ListMultipartUploads(env.Bucket)
	if err != nil || len(ups) != 1 {
		t.Fatalf("uploads in flight: %v %v, want 1", ups, err)
	}
	s2.Kill()
	_ = f.Close() // ENOTCONN: the server is gone
	if out, err := exec.Command("fusermount3", "-uz", s2.dir).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -uz: %v %s", err, out)
	}
	jf, err := os.Open(journal)
	if err != nil {
		t.Fatal(err)
	}
	defer jf.Close()
	pending, _, err := cos.ParseUploadJournal(jf)
	if err != nil || len(pending) != 1 || pending[0].Key != name || pending[0].UploadID != ups[0].ID {
		t.Fatalf("journal after the crash: %+v %v, want the upload of %s (%s)", pending, err, name, ups[0].ID)
	}
	return pending
}

func pendingIn(t *testing.T, journal string) []cos.PendingUpload {
	t.Helper()
	jf, err := os.Open(journal)
	if err != nil {
		t.Fatal(err)
	}
	defer jf.Close()
	p, _, err := cos.ParseUploadJournal(jf)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAbortUploadsAfterCrash: the multipart upload of a server killed in
// the middle of a write stays in the bucket, and its journal lists it;
// `cosmount abort-uploads` aborts it, clears the journal and exits 0.
func TestAbortUploadsAfterCrash(t *testing.T) {
	env := emulatortest.Start(t)
	journal := filepath.Join(t.TempDir(), "uploads.journal")
	crashWithOpenUpload(t, env, journal, "crashed.bin")

	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	token := env.WritePodToken(t, t.TempDir(), "default", "default", "e2e-pod", time.Hour)
	cmd := exec.CommandContext(ctx, cosmountBin, "abort-uploads", "--endpoint", env.COSURL, "--iam-endpoint", env.IAMURL,
		"--trusted-profile-id", emulatortest.WriterProfileID, "--cr-token-file", token,
		"--upload-journal", journal, env.Bucket)
	cmd.Env = childEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cosmount abort-uploads: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "aborted 1 of 1") {
		t.Errorf("output %q", out)
	}
	if ups, _ := env.Emulator.Store().ListMultipartUploads(env.Bucket); len(ups) != 0 {
		t.Errorf("uploads left after abort-uploads: %+v", ups)
	}
	if p := pendingIn(t, journal); len(p) != 0 {
		t.Errorf("journal after abort-uploads: %+v", p)
	}
	// Again: nothing to do, still exit 0.
	cmd = exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	cmd.Env = childEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("second abort-uploads: %v\n%s", err, out)
	}
}

// TestMountAbortsLeftUploads: a server started with the journal of one
// that crashed aborts that server's unfinished uploads before it serves,
// and records and clears its own.
func TestMountAbortsLeftUploads(t *testing.T) {
	env := emulatortest.Start(t)
	journal := filepath.Join(t.TempDir(), "uploads.journal")
	crashWithOpenUpload(t, env, journal, "crashed.bin")

	s, err := startServer(t, append(writerArgs(t, env), "--upload-journal", journal,
		"-o", "temp_dir="+t.TempDir()+",part_size=5MiB,multipart_threshold=5MiB", env.Bucket))
	if err != nil {
		t.Fatal(err)
	}
	if ups, _ := env.Emulator.Store().ListMultipartUploads(env.Bucket); len(ups) != 0 {
		t.Errorf("uploads left after the new server started: %+v", ups)
	}
	if p := pendingIn(t, journal); len(p) != 0 {
		t.Errorf("journal after the new server started: %+v", p)
	}
	waitForLog(t, s, "Aborted a multipart upload left by an earlier server", `key="crashed.bin"`)

	// Its own completed uploads do not stay listed.
	data := bytes.Repeat([]byte("y"), 11<<20)
	if err := os.WriteFile(s.path("done.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	newAPI(t, env).wantObject("done.bin", data)
	if p := pendingIn(t, journal); len(p) != 0 {
		t.Errorf("a completed upload is still in the journal: %+v", p)
	}
	// A second process may not use the journal of a live server.
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	token := env.WritePodToken(t, t.TempDir(), "default", "default", "e2e-pod", time.Hour)
	cmd := exec.CommandContext(ctx, cosmountBin, "abort-uploads", "--endpoint", env.COSURL, "--iam-endpoint", env.IAMURL,
		"--trusted-profile-id", emulatortest.WriterProfileID, "--cr-token-file", token, "--upload-journal", journal, env.Bucket)
	cmd.Env = childEnv()
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "in use") {
		t.Errorf("abort-uploads on a live server's journal: %v %s, want a refusal", err, out)
	}
}
