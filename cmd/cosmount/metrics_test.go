package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestServeUnix(t *testing.T) {
	// Unix socket paths are limited to 108 bytes; t.TempDir() can be longer.
	dir, err := os.MkdirTemp("", "cosmount-metrics-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "metrics.sock")
	// A socket file left by a crashed server must not stop the next one.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	m := newMountMetrics()
	m.ObserveRequest("PutObject", 12, nil)
	m.ObserveRequest("GetObject", 0, errors.New("boom"))
	m.tokenRefreshed(nil)
	stop, err := m.serveUnix(sock)
	if err != nil {
		t.Fatalf("serveUnix over a stale socket: %v", err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})

	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	resp, err := client.Get("http://cosmount/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`cosmount_s3_requests_total{operation="PutObject"} 1`,
		`cosmount_s3_bytes_total{operation="PutObject"} 12`,
		`cosmount_s3_errors_total{operation="GetObject"} 1`,
		`cosmount_iam_token_refreshes_total{result="success"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("exposition lacks %s:\n%s", want, body)
		}
	}
	client.CloseIdleConnections()

	stop()
	stopped = true
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still exists after stop: %v", err)
	}
}
