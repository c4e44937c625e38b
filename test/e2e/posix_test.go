package e2e

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

// TestShellOperations drives the mount with a real shell, as a pod would, and
// checks every effect in the bucket through the S3 API.
func TestShellOperations(t *testing.T) {
	env := emulatortest.Start(t)
	m := mountWriter(t, env)
	b := newAPI(t, env)

	t.Run("echo creates the object with a bearer token of the profile", func(t *testing.T) {
		n := env.AuditLen()
		shell(t, m.dir, `echo "hello world" > hello.txt`)
		b.wantObject("hello.txt", []byte("hello world\n"))
		puts := byOperation(env.AuditSince(n), "PutObject", "hello.txt")
		if len(puts) == 0 {
			t.Fatalf("no PutObject of hello.txt in the audit: %+v", cosEntries(env.AuditSince(n)))
		}
		for _, e := range puts {
			if e.Status != 200 || e.PrincipalType != "profile" || e.PrincipalID != emulatortest.WriterProfileID || e.AuthScheme != "bearer" {
				t.Errorf("PutObject %+v: want 200 by profile %s with scheme bearer", e, emulatortest.WriterProfileID)
			}
		}
	})

	t.Run("cat", func(t *testing.T) {
		if got := shell(t, m.dir, "cat hello.txt"); got != "hello world\n" {
			t.Errorf("cat hello.txt = %q", got)
		}
	})

	t.Run("append", func(t *testing.T) {
		shell(t, m.dir, `echo "more" >> hello.txt`)
		b.wantObject("hello.txt", []byte("hello world\nmore\n"))
		if got := shell(t, m.dir, "cat hello.txt"); got != "hello world\nmore\n" {
			t.Errorf("cat after append = %q", got)
		}
	})

	t.Run("overwrite", func(t *testing.T) {
		shell(t, m.dir, `echo "new" > hello.txt`)
		b.wantObject("hello.txt", []byte("new\n"))
	})

	t.Run("truncate", func(t *testing.T) {
		shell(t, m.dir, "truncate -s 2 hello.txt")
		b.wantObject("hello.txt", []byte("ne"))
		shell(t, m.dir, "truncate -s 5 hello.txt")
		b.wantObject("hello.txt", []byte("ne\x00\x00\x00"))
		if got := shell(t, m.dir, "wc -c < hello.txt"); strings.TrimSpace(got) != "5" {
			t.Errorf("size after extending truncate = %q, want 5", got)
		}
	})

	t.Run("mkdir -p writes markers", func(t *testing.T) {
		shell(t, m.dir, "mkdir -p a/b/c")
		for _, key := range []string{"a/", "a/b/", "a/b/c/"} {
			b.wantObject(key, nil)
		}
		if got := shell(t, m.dir, "test -d a/b/c && echo dir"); got != "dir\n" {
			t.Errorf("a/b/c is not a directory through the mount: %q", got)
		}
	})

	t.Run("rename a file", func(t *testing.T) {
		shell(t, m.dir, "mv hello.txt a/b/c/moved.txt")
		b.wantMissing("hello.txt")
		b.wantObject("a/b/c/moved.txt", []byte("ne\x00\x00\x00"))
		if got := shell(t, m.dir, "ls a/b/c"); got != "moved.txt\n" {
			t.Errorf("ls a/b/c = %q", got)
		}
	})

	t.Run("rename a directory of 100 files", func(t *testing.T) {
		shell(t, m.dir, `mkdir src && for i in $(seq 1 100); do echo "file $i" > src/f$i; done`)
		if got := len(b.keys("src/")); got != 101 {
			t.Fatalf("%d keys under src/ before the rename, want 100 files and the marker", got)
		}
		shell(t, m.dir, "mv src dst")
		if left := b.keys("src/"); len(left) != 0 {
			t.Errorf("keys left under src/ after mv: %d (%v...)", len(left), left[:min(5, len(left))])
		}
		keys := b.keys("dst/")
		if len(keys) != 101 {
			t.Errorf("%d keys under dst/ after mv, want 101", len(keys))
		}
		b.wantObject("dst/", nil)
		for i := 1; i <= 100; i++ {
			b.wantObject(fmt.Sprintf("dst/f%d", i), fmt.Appendf(nil, "file %d\n", i))
		}
		if got := strings.Fields(shell(t, m.dir, "ls dst | wc -l")); len(got) != 1 || got[0] != "100" {
			t.Errorf("ls dst | wc -l = %v, want 100", got)
		}
		if _, _, err := shellResult(m.dir, "test -e src"); err == nil {
			t.Error("src still exists through the mount after mv")
		}
	})

	t.Run("rename over an existing file", func(t *testing.T) {
		shell(t, m.dir, "echo one > x1 && echo two > x2 && mv x1 x2")
		b.wantMissing("x1")
		b.wantObject("x2", []byte("one\n"))
		if got := shell(t, m.dir, "cat x2"); got != "one\n" {
			t.Errorf("cat x2 after mv x1 x2 = %q", got)
		}
	})

	t.Run("append to a large object written through the API", func(t *testing.T) {
		// Larger than the multipart threshold: the read-modify-write must
		// carry every byte of the old object over.
		data := make([]byte, 20*MiB+17)
		_, _ = rand.NewChaCha8(seedBytes(99)).Read(data)
		b.put("large.dat", data)
		shell(t, m.dir, "echo tail >> large.dat")
		want := sha256.Sum256(append(data, "tail\n"...))
		if got, n := b.sha256Of("large.dat"); got != want || n != int64(len(data))+5 {
			t.Errorf("large.dat after append: %d bytes, sha256 %x; want %d bytes, %x", n, got, len(data)+5, want)
		}
		if got := shell(t, m.dir, "tail -c 5 large.dat"); got != "tail\n" {
			t.Errorf("tail -c 5 large.dat = %q", got)
		}
	})

	t.Run("impossible or refused operations fail with a clear errno", func(t *testing.T) {
		n := env.AuditLen()
		for _, c := range []struct{ script, want string }{
			{"rmdir dst", "Directory not empty"},
			{"ln x2 hardlink", "Operation not permitted"},
		} {
			_, stderr, err := shellResult(m.dir, c.script)
			if err == nil || !strings.Contains(stderr, c.want) {
				t.Errorf("%s: %v, stderr %q; want a failure saying %s", c.script, err, stderr, c.want)
			}
		}
		for _, e := range cosEntries(env.AuditSince(n)) {
			if e.Method != "GET" && e.Method != "HEAD" {
				t.Errorf("refused operation modified the bucket: %s %s", e.Method, e.Path)
			}
		}
		b.wantObject("dst/f1", []byte("file 1\n"))
		b.wantMissing("hardlink")
	})

	t.Run("rm -rf", func(t *testing.T) {
		shell(t, m.dir, "rm -rf dst a x2 large.dat")
		if left := b.keys(""); len(left) != 0 {
			t.Errorf("keys left in the bucket after rm -rf: %v", left)
		}
		if got := shell(t, m.dir, "ls -A"); got != "" {
			t.Errorf("ls -A after rm -rf = %q, want nothing", got)
		}
	})

	if t.Failed() {
		t.Logf("cosmount log:\n%s", m.log())
	}
	if strings.Contains(m.log(), "panic") {
		t.Errorf("cosmount log mentions a panic:\n%s", m.log())
	}
}
