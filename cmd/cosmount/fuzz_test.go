package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzReadSecretFile: an API key file as someone wrote it. The key comes
// back trimmed and non-empty; an error names the file, never the content.
func FuzzReadSecretFile(f *testing.F) {
	f.Add([]byte("api-key-value\n"))
	f.Add([]byte("  \t\n"))
	f.Add([]byte("\x00binary\xffkey"))
	f.Add([]byte("two\nlines"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, content []byte) {
		path := filepath.Join(dir, "key")
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := readSecretFile("--api-key-file", path)
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name the file", err)
			}
			if trimmed := strings.TrimSpace(string(content)); len(trimmed) >= 4 && strings.Contains(err.Error(), trimmed) {
				t.Fatalf("error %q quotes the content", err)
			}
			return
		}
		if s == "" || s != strings.TrimSpace(s) || s != strings.TrimSpace(string(content)) {
			t.Fatalf("read %q from %q", s, content)
		}
	})
}

// FuzzParseSource: BUCKET[:/PREFIX] from the command line (the node plugin
// builds it from volume attributes).
func FuzzParseSource(f *testing.F) {
	for _, s := range []string{"bucket", "bucket:/team/a", "bucket:team", ":x", "b/c", "b:/a//b", "b:///", "b: x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		bucket, prefix, err := parseSource(s)
		if err != nil {
			return
		}
		if bucket == "" || strings.ContainsAny(bucket, "/ ") {
			t.Fatalf("%q: bucket %q", s, bucket)
		}
		if prefix != "" && (!strings.HasSuffix(prefix, "/") || strings.HasPrefix(prefix, "/") || strings.Contains(prefix, "//")) {
			t.Fatalf("%q: prefix %q", s, prefix)
		}
	})
}
