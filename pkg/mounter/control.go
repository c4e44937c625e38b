package mounter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/cosmount/cosmount/pkg/volume"
)

// controlTimeout bounds one call to a server's control socket. A stopped
// or stuck server costs at most this, and no thread: the socket I/O does
// not block in the kernel the way statfs on its mount does.
const controlTimeout = 3 * time.Second

// controlClient talks to servers over their control sockets, with at most one
// status call in flight per socket: concurrent callers share its answer.
type controlClient struct {
	mu       sync.Mutex
	inflight map[string]*statusCall // guarded by mu
}

type statusCall struct {
	done chan struct{}
	st   *volume.ServerStatus
	err  error
}

func httpOverUnix(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
}

// do calls method path on the server at sock and decodes a ServerStatus.
func controlCall(ctx context.Context, sock, method, path string) (*volume.ServerStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, controlTimeout)
	defer cancel()
	// The host is never resolved: the transport always dials sock.
	req, err := http.NewRequestWithContext(ctx, method, "http://cosmount"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpOverUnix(sock).Do(req)
	if err != nil {
		return nil, fmt.Errorf("server control socket: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		return nil, fmt.Errorf("server control socket: %s %s answered %s", method, path, resp.Status)
	}
	var st volume.ServerStatus
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return nil, fmt.Errorf("server control socket: decoding %s: %w", path, err)
	}
	return &st, nil
}

// status returns the server's status; callers arriving while a call to the
// same socket runs get its result.
func (c *controlClient) status(ctx context.Context, sock string) (*volume.ServerStatus, error) {
	c.mu.Lock()
	if c.inflight == nil {
		c.inflight = map[string]*statusCall{}
	}
	call, ok := c.inflight[sock]
	if !ok {
		call = &statusCall{done: make(chan struct{})}
		c.inflight[sock] = call
		go func() {
			call.st, call.err = controlCall(context.Background(), sock, http.MethodGet, volume.ControlStatusPath)
			c.mu.Lock()
			delete(c.inflight, sock)
			c.mu.Unlock()
			close(call.done)
		}()
	}
	c.mu.Unlock()
	select {
	case <-call.done:
		return call.st, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// flush asks the server to upload everything pending, in the background.
func (c *controlClient) flush(ctx context.Context, sock string) (*volume.ServerStatus, error) {
	return controlCall(ctx, sock, http.MethodPost, volume.ControlFlushPath)
}
