package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
	"github.com/cosmount/cosmount/pkg/emulator/faults"
)

// TestFailedUploadIsLoud: when COS refuses every PUT, close() returns EIO,
// cp reports "Input/output error", the log names the key, and nothing
// half-written appears in the bucket. A failed fsync keeps the dirty data,
// so a later close uploads it once COS accepts writes again.
func TestFailedUploadIsLoud(t *testing.T) {
	env := emulatortest.Start(t)
	b := newAPI(t, env)
	m := mountWriter(t, env)

	if err := env.COSFaults().FailNext(faults.Rule{Kind: faults.InternalError, Count: 1 << 30, Method: "PUT"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.COSFaults().Clear)
	n := env.AuditLen()

	f, err := os.Create(m.path("fail.txt"))
	if err != nil {
		t.Fatalf("create with failing PUTs: %v (the failure should surface at close, where the upload happens)", err)
	}
	if _, err := f.Write([]byte("this must not be lost silently\n")); err != nil {
		t.Errorf("write: %v", err)
	}
	err = f.Close()
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("close() = %v, want EIO", err)
	}
	// Fault injection answers before the request is parsed, so its audit
	// entries carry the method and path but no operation name.
	faulted := 0
	for _, e := range cosEntries(env.AuditSince(n)) {
		if e.Method == "PUT" && strings.HasSuffix(e.Path, "/fail.txt") && e.Fault != "" {
			faulted++
		}
	}
	if faulted == 0 {
		t.Errorf("no PUT of fail.txt was answered by fault injection: %+v", cosEntries(env.AuditSince(n)))
	}
	waitForLog(t, m, "upload failed", `key="fail.txt"`)

	// A shell ignores the result of close() on a redirection, so `echo x >
	// f` cannot report the failure; cp checks it, as careful programs do.
	local := filepath.Join(t.TempDir(), "local.txt")
	if err := os.WriteFile(local, []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := shellResult(m.dir, "cp "+local+" shell.txt")
	if err == nil {
		t.Error("cp to the mount succeeded although every PUT fails")
	}
	if !strings.Contains(stderr, "Input/output error") {
		t.Errorf("cp stderr %q does not say Input/output error", stderr)
	}
	waitForLog(t, m, "upload failed", `key="shell.txt"`)

	b.wantMissing("fail.txt")
	b.wantMissing("shell.txt")

	kept := []byte("kept after a failed fsync\n")
	f, err = os.Create(m.path("kept.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(kept); err != nil {
		t.Errorf("write: %v", err)
	}
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Errorf("fsync with failing PUTs = %v, want EIO", err)
	}
	env.COSFaults().Clear()
	if err := f.Close(); err != nil {
		t.Errorf("close after COS recovered: %v", err)
	}
	b.wantObject("kept.txt", kept)
}

// waitForLog waits a little for a log line that contains every one of
// want: the server logs the failure while answering the request, but the
// line reaches the file through its own write.
func waitForLog(t *testing.T, s *server, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !hasLine(s.log(), want) {
		if time.Now().After(deadline) {
			t.Errorf("no line of the server log contains all of %q:\n%s", want, s.log())
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func hasLine(log string, want []string) bool {
	for line := range strings.SplitSeq(log, "\n") {
		if !slices.ContainsFunc(want, func(w string) bool { return !strings.Contains(line, w) }) {
			return true
		}
	}
	return false
}

// TestUploadAcrossTokenLifetimes: with access tokens that live one second,
// a 200 MiB write (a multipart upload of many parts) succeeds and reads back;
// the token refresh is invisible to the filesystem.
func TestUploadAcrossTokenLifetimes(t *testing.T) {
	const size = 200 * MiB
	env := emulatortest.Start(t)
	b := newAPI(t, env)
	env.SetAccessTokenLifetime(time.Second)
	m := mountWriter(t, env)

	n := env.AuditLen()
	start := time.Now()
	// Paced to last at least 5 s, whatever the machine's speed, so that the
	// upload surely spans several token lifetimes.
	want := writeDeterministic(t, m.path("long.bin"), size, 7, 25*time.Millisecond)

	took := time.Since(start)
	entries := env.AuditSince(n)

	exchanges, refused := 0, 0
	for _, e := range entries {
		if e.Service == "iam" && e.Operation == "Token" && e.Status == 200 {
			exchanges++
		}
		if e.Service == "cos" && (e.Status == 401 || e.Status == 403) {
			refused++
		}
	}
	t.Logf("200 MiB in %.1fs with 1 s tokens: %d token exchanges, %d COS requests refused (then retried with a fresh token)", took.Seconds(), exchanges, refused)
	if exchanges < 2 {
		t.Errorf("the write took %.1fs with 1 s tokens but only %d token exchanges happened during it: the token was not refreshed", took.Seconds(), exchanges)
	}
	if got, n := b.sha256Of("long.bin"); n != size || got != want {
		t.Errorf("long.bin through the API: %d bytes, sha256 %x; want %d bytes, %x", n, got, size, want)
	}
	if got, n := hashFile(t, m.path("long.bin")); n != size || got != want {
		t.Errorf("long.bin through the mount: %d bytes, sha256 %x; want %d bytes, %x", n, got, size, want)
	}
}

// TestReadOnlyMount: with -o ro every modifying operation fails with EROFS,
// reads work, and the bucket is untouched.
func TestReadOnlyMount(t *testing.T) {
	env := emulatortest.Start(t)
	b := newAPI(t, env)
	b.put("existing.txt", []byte("read me\n"))
	b.put("dir/inside.txt", []byte("inside\n"))
	m := mountWriter(t, env, "ro")
	n := env.AuditLen()

	if got, err := os.ReadFile(m.path("existing.txt")); err != nil || string(got) != "read me\n" {
		t.Errorf("read on a read-only mount = %q, %v", got, err)
	}
	ops := []struct {
		name string
		do   func() error
	}{
		{"create", func() error { return os.WriteFile(m.path("new.txt"), []byte("x"), 0o644) }},
		{"open for writing", func() error {
			f, err := os.OpenFile(m.path("existing.txt"), os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"append", func() error {
			f, err := os.OpenFile(m.path("existing.txt"), os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"truncate", func() error { return os.Truncate(m.path("existing.txt"), 0) }},
		{"mkdir", func() error { return os.Mkdir(m.path("newdir"), 0o755) }},
		{"unlink", func() error { return os.Remove(m.path("existing.txt")) }},
		{"rmdir of a non-empty directory", func() error { return os.Remove(m.path("dir")) }},
		{"rename", func() error { return os.Rename(m.path("existing.txt"), m.path("renamed.txt")) }},
		{"chmod", func() error { return os.Chmod(m.path("existing.txt"), 0o600) }},
		{"utimes", func() error { return os.Chtimes(m.path("existing.txt"), time.Now(), time.Now()) }},
		{"symlink", func() error { return os.Symlink("existing.txt", m.path("link")) }},
	}
	for _, op := range ops {
		if err := op.do(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s on a read-only mount: %v, want EROFS", op.name, err)
		}
	}
	if _, stderr, err := shellResult(m.dir, "echo x >> existing.txt"); err == nil || !strings.Contains(stderr, "Read-only file system") {
		t.Errorf("echo x >> existing.txt: %v, stderr %q; want a failure saying Read-only file system", err, stderr)
	}

	for _, e := range cosEntries(env.AuditSince(n)) {
		if e.Method != "GET" && e.Method != "HEAD" {
			t.Errorf("modifying request on a read-only mount: %s %s", e.Method, e.Path)
		}
	}
	if keys := b.keys(""); !slices.Equal(keys, []string{"dir/inside.txt", "existing.txt"}) {
		t.Errorf("bucket after the refused writes: %v", keys)
	}
	b.wantObject("existing.txt", []byte("read me\n"))
}
