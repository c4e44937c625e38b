package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

// startS3FS mounts the emulator's bucket with s3fs (HMAC) in the foreground,
// as a child the test owns by PID.
func startS3FS(t *testing.T, env *emulatortest.Env) *server {
	t.Helper()
	if _, err := exec.LookPath("s3fs"); err != nil {
		t.Skip("s3fs is not installed (apt-get install -y s3fs); CI installs it, so this only skips on a developer machine")
	}
	dir := newMountpoint(t)
	id, secret := env.HMAC()
	passwd := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(passwd, []byte(id+":"+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := []string{"url=" + env.COSURL, "use_path_request_style", "passwd_file=" + passwd, "dbglevel=err"}
	s, err := launch(t, dir, exec.Command("s3fs", env.Bucket, dir, "-f", "-o", strings.Join(opts, ",")), "fuse.s3fs")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestS3FSInterop: the same bucket reads the same through s3fs 1.90 and
// cosmount, content, mode and mtime included, in both directions (both
// store them as x-amz-meta-mode / -mtime).
func TestS3FSInterop(t *testing.T) {
	requireFUSE(t)
	env := emulatortest.Start(t)
	b := newAPI(t, env)
	s3fs := startS3FS(t, env)
	cm := mountWriter(t, env)

	cases := []struct {
		name          string
		writer, other *server
		file          string
		content       string
		mode          os.FileMode
		mtime         time.Time
	}{
		{"s3fs writes, cosmount reads", s3fs, cm, "by-s3fs.txt", "written by s3fs\n", 0o640, time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)},
		{"cosmount writes, s3fs reads", cm, s3fs, "by-cosmount.txt", "written by cosmount\n", 0o600, time.Date(2011, 12, 13, 14, 15, 16, 0, time.UTC)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			script := "printf '%s' \"$1\" > \"$2\" && chmod " + strconv.FormatUint(uint64(c.mode), 8) + " \"$2\" && touch -d @" +
				strconv.FormatInt(c.mtime.Unix(), 10) + " \"$2\""
			cmd := exec.Command("sh", "-c", script, "sh", c.content, c.file)
			cmd.Dir = c.writer.dir
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("write, chmod, touch through %s: %v: %s\n%s", filepath.Base(c.writer.Cmd.Path), err, out, c.writer.log())
			}
			b.wantObject(c.file, []byte(c.content))
			if info, ok := b.head(c.file); ok {
				t.Logf("%s metadata in the bucket: %v", c.file, info.Metadata)
			}

			st, err := os.Stat(filepath.Join(c.other.dir, c.file))
			if err != nil {
				t.Fatalf("stat through %s: %v", filepath.Base(c.other.Cmd.Path), err)
			}
			if st.Mode() != c.mode {
				t.Errorf("mode through %s = %v, want %v", filepath.Base(c.other.Cmd.Path), st.Mode(), c.mode)
			}
			if !st.ModTime().Equal(c.mtime) {
				t.Errorf("mtime through %s = %v, want %v", filepath.Base(c.other.Cmd.Path), st.ModTime().UTC(), c.mtime)
			}
			if got, err := os.ReadFile(filepath.Join(c.other.dir, c.file)); err != nil || string(got) != c.content {
				t.Errorf("read through %s = %q, %v; want %q", filepath.Base(c.other.Cmd.Path), got, err, c.content)
			}
		})
	}
}
