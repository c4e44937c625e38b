package cos

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadHMACFile(t *testing.T) {
	tests := []struct {
		name, content string
		want          HMAC
		wantErr       bool
	}{
		{name: "one line", content: "AKID:s3cr3t\n", want: HMAC{"AKID", "s3cr3t"}},
		{name: "two lines", content: "AKID\ns3cr3t\n", want: HMAC{"AKID", "s3cr3t"}},
		{name: "empty", content: "\n", wantErr: true},
		{name: "no secret", content: "AKID:\n", wantErr: true},
		{name: "three fields", content: "a b c", wantErr: true},
		{name: "two colons", content: "a:b:s3cr3t", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "hmac")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := ReadHMACFile(path)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ReadHMACFile(%q) = %+v, want an error", tc.content, got)
				}
				if strings.Contains(err.Error(), "s3cr3t") {
					t.Errorf("error %q leaks the secret", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("ReadHMACFile(%q) = %+v, %v; want %+v", tc.content, got, err, tc.want)
			}
		})
	}
	if _, err := ReadHMACFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing file gave no error")
	}
}
