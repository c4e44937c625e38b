package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/volume"
)

// fakeFS stands in for a mounted filesystem behind the control socket.
type fakeFS struct {
	mu      sync.Mutex
	pending volume.Pending
	flushed chan struct{}
}

func (f *fakeFS) Pending() volume.Pending {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pending
}
func (f *fakeFS) MemoryStats() (int64, int64) { return 1, 2 }
func (f *fakeFS) Flush(ctx context.Context) error {
	f.mu.Lock()
	f.pending = volume.Pending{}
	f.mu.Unlock()
	close(f.flushed)
	return nil
}

func TestControlSocket(t *testing.T) {
	// Unix socket paths are limited to 108 bytes; t.TempDir() can be longer.
	dir, err := os.MkdirTemp("", "cosmount-control-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "control.sock")
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
	ffs := &fakeFS{pending: volume.Pending{Files: 2, Bytes: 300}, flushed: make(chan struct{})}
	ctl := &controlServer{metrics: m, fs: ffs, life: context.Background()}
	stop, err := serveControl(sock, ctl.handler())
	if err != nil {
		t.Fatalf("serveControl over a stale socket: %v", err)
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
	get := func(method, path string, wantCode int) []byte {
		t.Helper()
		req, _ := http.NewRequest(method, "http://cosmount"+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != wantCode {
			t.Fatalf("%s %s = %s, want %d", method, path, resp.Status, wantCode)
		}
		return body
	}
	body := get("GET", "/metrics", 200)
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
	var st volume.ServerStatus
	if err := json.Unmarshal(get("GET", "/v1/status", 200), &st); err != nil {
		t.Fatal(err)
	}
	if st.Pending.Files != 2 || st.Pending.Bytes != 300 || st.PID != os.Getpid() || st.MemoryHighWater != 2 {
		t.Errorf("status %+v", st)
	}
	get("GET", "/v1/flush", 405) // changing state takes a POST
	get("POST", "/v1/flush", 202)
	select {
	case <-ffs.flushed:
	case <-time.After(30 * time.Second):
		t.Fatal("POST /v1/flush did not flush")
	}
	client.CloseIdleConnections()

	stop()
	stopped = true
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still exists after stop: %v", err)
	}
}
