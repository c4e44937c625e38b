// Package interop checks the emulator against clients nobody in this project
// wrote: here s3fs-fuse, which speaks both IBM IAM (API key grant, bearer
// tokens) and HMAC SigV4 to COS. If s3fs accepts the emulator, its token
// endpoint, S3 dialect and signature checks are not only self-consistent.
package interop

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cosmount/cosmount/internal/testproc"
	"github.com/cosmount/cosmount/pkg/emulator/audit"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

// Generous: two cores shared by several builds.
const (
	mountTimeout   = 90 * time.Second
	unmountTimeout = 60 * time.Second
)

func requireS3FS(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("s3fs"); err != nil {
		t.Skip("s3fs is not installed (apt-get install -y s3fs fuse3); CI installs it, so this only skips on a developer machine")
	}
}

// s3fsMount is one running s3fs process.
type s3fsMount struct {
	dir string
	*testproc.Process
}

// startS3FS runs s3fs in the foreground (a child we own by PID) and waits
// until the mount is live or s3fs exits. passwd is the passwd-file content.
// Cleanup unmounts and reaps the process, even when the test fails.
func startS3FS(t *testing.T, env *emulatortest.Env, passwd string, opts ...string) (*s3fsMount, error) {
	t.Helper()
	work := t.TempDir()
	passwdFile := filepath.Join(work, "passwd")
	if err := os.WriteFile(passwdFile, []byte(passwd+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(work, "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	all := append([]string{"url=" + env.COSURL, "use_path_request_style", "passwd_file=" + passwdFile, "dbglevel=err"}, opts...)
	p, err := testproc.Start("s3fs", filepath.Join(work, "s3fs.log"), 0o600,
		exec.Command("s3fs", env.Bucket, dir, "-f", "-o", strings.Join(all, ",")))
	if err != nil {
		t.Fatal(err)
	}
	m := &s3fsMount{dir: dir, Process: p}
	t.Cleanup(func() { m.stop(t) })
	// Live, not only listed: s3fs checks its credentials once it has
	// mounted, so a refused mount can be listed for a moment before s3fs
	// exits (seen under load); a stat through the mount waits for s3fs.
	if err := testproc.WaitMounted(context.Background(), p, dir, "fuse.s3fs", true, mountTimeout); err != nil {
		return m, fmt.Errorf("%w: %s", err, m.log())
	}
	return m, nil
}

// stop unmounts, which ends s3fs, and kills s3fs if it does not end.
func (m *s3fsMount) stop(t *testing.T) {
	if !m.Exited() {
		if testproc.IsMounted(m.dir, "fuse.s3fs") {
			if out, err := exec.Command("fusermount3", "-u", m.dir).CombinedOutput(); err != nil {
				t.Logf("fusermount3 -u %s: %v %s; unmounting lazily", m.dir, err, out)
				_ = exec.Command("fusermount3", "-uz", m.dir).Run()
			}
		}
		select {
		case <-m.Done():
		case <-time.After(unmountTimeout):
			t.Errorf("s3fs (pid %d) still running %v after unmount; killing it", m.PID(), unmountTimeout)
			m.Kill()
		}
	}
	if testproc.IsMounted(m.dir, "fuse.s3fs") {
		_ = exec.Command("fusermount3", "-uz", m.dir).Run()
	}
}

// log returns s3fs's output without lines that could carry credentials.
func (m *s3fsMount) log() string {
	b, _ := os.ReadFile(m.LogPath)
	var keep []string
	for line := range strings.SplitSeq(string(b), "\n") {
		l := strings.ToLower(line)
		if strings.Contains(l, "authorization") || strings.Contains(l, "token") || strings.Contains(l, "apikey") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}

// apiGet reads an object through the COS API with the HMAC-free path: a
// bearer token from the API key grant.
func apiGet(t *testing.T, env *emulatortest.Env, key string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", env.COSURL+"/"+env.Bucket+"/"+key, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+bearer(t, env))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func apiPut(t *testing.T, env *emulatortest.Env, key string, body []byte) {
	t.Helper()
	req, err := http.NewRequest("PUT", env.COSURL+"/"+env.Bucket+"/"+key, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+bearer(t, env))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PUT %s through the API: %d", key, resp.StatusCode)
	}
}

func bearer(t *testing.T, env *emulatortest.Env) string {
	t.Helper()
	resp, err := http.PostForm(env.TokenURL(), url.Values{
		"grant_type": {"urn:ibm:params:oauth:grant-type:apikey"}, "apikey": {env.APIKey()}, "response_type": {"cloud_iam"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || resp.StatusCode != 200 {
		t.Fatalf("API key exchange: %d %v", resp.StatusCode, err)
	}
	return tr.AccessToken
}

// find returns the audit entries of one operation on one key.
func find(entries []audit.Entry, op, key string) []audit.Entry {
	var out []audit.Entry
	for _, e := range entries {
		if e.Operation == op && e.Key == key {
			out = append(out, e)
		}
	}
	return out
}

func TestS3FSWithIBMIAM(t *testing.T) {
	requireS3FS(t)
	env := emulatortest.Start(t)
	// With ibm_iam_auth, s3fs reads the passwd file's two fields as the
	// service instance id and the API key.
	m, err := startS3FS(t, env, env.ServiceInstanceID+":"+env.APIKey(),
		"ibm_iam_auth", "ibm_iam_endpoint="+env.IAMURL)
	if err != nil {
		t.Fatal(err)
	}
	entries := env.Audit()
	var exchanged bool
	for _, e := range entries {
		if e.Service == "iam" && e.Status == 200 && e.PrincipalID == emulatortest.APIKeyID {
			exchanged = true
		}
	}
	if !exchanged {
		t.Errorf("s3fs mounted without an API key exchange at IAM; audit: %+v", entries)
	}

	content := []byte("hello from s3fs over IBM IAM\n")
	n := env.AuditLen()
	if err := os.WriteFile(filepath.Join(m.dir, "hello.txt"), content, 0o644); err != nil {
		t.Fatalf("write through s3fs: %v\n%s", err, m.log())
	}
	if status, got := apiGet(t, env, "hello.txt"); status != 200 || !bytes.Equal(got, content) {
		t.Errorf("object through the API: %d %q, want %q", status, got, content)
	}
	var uploaded bool
	for _, e := range find(env.AuditSince(n), "PutObject", "hello.txt") {
		if e.Status != 200 || e.PrincipalType != "apikey" || e.PrincipalID != emulatortest.APIKeyID || e.AuthScheme != "bearer" {
			t.Errorf("PutObject entry %+v: want 200 by apikey %s with bearer", e, emulatortest.APIKeyID)
		}
		if e.Bytes == int64(len(content)) {
			uploaded = true
		}
	}
	if !uploaded {
		t.Errorf("no PutObject of hello.txt with %d bytes in the audit: %+v", len(content), env.AuditSince(n))
	}

	// And the other way round: an object written through the API shows up
	// in the mount with its content.
	apiPut(t, env, "from-api.txt", []byte("written by the API"))
	got, err := os.ReadFile(filepath.Join(m.dir, "from-api.txt"))
	if err != nil || string(got) != "written by the API" {
		t.Errorf("read through s3fs: %q %v", got, err)
	}
}

func TestS3FSWithHMAC(t *testing.T) {
	requireS3FS(t)
	env := emulatortest.Start(t)
	id, secret := env.HMAC()

	t.Run("wrong secret is refused", func(t *testing.T) {
		n := env.AuditLen()
		if _, err := startS3FS(t, env, id+":not-the-secret"); err == nil {
			t.Fatal("s3fs mounted with a wrong secret")
		}
		var denied bool
		for _, e := range env.AuditSince(n) {
			if e.Status == http.StatusForbidden && e.ErrorCode == "SignatureDoesNotMatch" {
				denied = true
			}
			if e.Status/100 == 2 {
				t.Errorf("request with a wrong secret succeeded: %+v", e)
			}
		}
		if !denied {
			t.Errorf("no SignatureDoesNotMatch in the audit: %+v", env.AuditSince(n))
		}
	})

	m, err := startS3FS(t, env, id+":"+secret)
	if err != nil {
		t.Fatal(err)
	}
	n := env.AuditLen()
	small := []byte("signed with SigV4 by s3fs\n")
	if err := os.WriteFile(filepath.Join(m.dir, "small.txt"), small, 0o644); err != nil {
		t.Fatalf("write: %v\n%s", err, m.log())
	}
	// Larger than s3fs's multipart threshold (20 MiB by default with 10 MiB
	// parts), so CreateMultipartUpload / UploadPart / Complete are signed too.
	big := make([]byte, 25<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.dir, "big.bin"), big, 0o644); err != nil {
		t.Fatalf("write big: %v\n%s", err, m.log())
	}
	if err := os.Mkdir(filepath.Join(m.dir, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.dir, "dir", "a.txt"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(m.dir, "dir", "a.txt"), filepath.Join(m.dir, "dir", "b.txt")); err != nil {
		t.Fatalf("rename: %v\n%s", err, m.log())
	}

	names, err := os.ReadDir(filepath.Join(m.dir, "dir"))
	if err != nil || len(names) != 1 || names[0].Name() != "b.txt" {
		t.Errorf("listing through s3fs: %v %v", names, err)
	}
	s3fsEntries := env.AuditSince(n) // before the test's own API requests

	ops := map[string]bool{}
	for _, e := range s3fsEntries {
		if e.Service != "cos" {
			continue
		}
		ops[e.Operation] = true
		if e.Status >= 500 || e.Status == http.StatusForbidden || e.AuthScheme != "sigv4" || e.PrincipalID != id {
			t.Errorf("unexpected entry %+v", e)
		}
	}
	if status, got := apiGet(t, env, "small.txt"); status != 200 || !bytes.Equal(got, small) {
		t.Errorf("small.txt through the API: %d %q", status, got)
	}
	if status, got := apiGet(t, env, "big.bin"); status != 200 || md5.Sum(got) != md5.Sum(big) {
		t.Errorf("big.bin through the API: status %d, %d bytes, content differs", status, len(got))
	}
	if status, _ := apiGet(t, env, "dir/"); status != 200 {
		t.Errorf("directory marker dir/: %d", status)
	}
	if status, got := apiGet(t, env, "dir/b.txt"); status != 200 || string(got) != "a" {
		t.Errorf("renamed object: %d %q", status, got)
	}
	if status, _ := apiGet(t, env, "dir/a.txt"); status != http.StatusNotFound {
		t.Errorf("rename source still there: %d", status)
	}

	for _, op := range []string{"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "CopyObject", "DeleteObject", "ListObjects", "HeadObject"} {
		if !ops[op] {
			t.Errorf("s3fs never issued %s (operations seen: %v)", op, ops)
		}
	}
}
