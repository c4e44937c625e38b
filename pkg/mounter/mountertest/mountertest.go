// Package mountertest runs a node's mounter inside a test process, behind
// its gRPC socket as the mounter DaemonSet serves it, so that tests of the
// node plugin go through the same client and wire format as a cluster.
package mountertest

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/cosmount/cosmount/pkg/mounter"
	"github.com/cosmount/cosmount/pkg/mounterapi"
)

// Mounter is a running in-process mounter.
type Mounter struct {
	*mounter.Mounter
	// Endpoint is its socket, for driver.Options.MounterEndpoint.
	Endpoint string
	// Logs holds what its servers wrote.
	Logs *Buffer
}

// Start runs a mounter with state in dir/state and its socket at
// dir/mounter.sock (dir must be short: unix socket paths are limited).
// binary is the server it starts. Its cleanup unpublishes whatever a failed
// test left, so no process or mount remains, and prints the servers' log
// when the test failed.
func Start(t testing.TB, dir, binary string, tweak ...func(*mounter.Options)) *Mounter {
	t.Helper()
	logs := &Buffer{}
	opts := mounter.Options{
		StateDir: filepath.Join(dir, "state"), Binary: binary,
		MountTimeout: 60 * time.Second, StopTimeout: 20 * time.Second, Log: logs,
	}
	for _, f := range tweak {
		f(&opts)
	}
	m, err := mounter.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	m.Recover()
	sock := filepath.Join(dir, "mounter.sock")
	ln, err := mounterapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	mounterapi.Register(srv, m)
	go srv.Serve(ln) //nolint:errcheck // ends at Stop
	t.Cleanup(func() {
		srv.Stop()
		list, _ := m.List(context.Background(), &mounterapi.ListRequest{})
		for _, v := range list.Volumes {
			if _, err := m.Unpublish(context.Background(), &mounterapi.UnpublishRequest{Target: v.Target}); err != nil {
				t.Errorf("cleanup of %s: %v", v.Target, err)
			}
		}
		m.Close()
		if t.Failed() {
			t.Logf("servers' log:\n%s", logs.String())
		}
	})
	return &Mounter{Mounter: m, Endpoint: "unix://" + sock, Logs: logs}
}

// Buffer is an io.Writer safe for concurrent use.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

var _ io.Writer = (*Buffer)(nil)

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
