package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cosmount/cosmount/internal/testproc"
)

// The emulator's default configuration's well-known test credentials (see
// pkg/emulator/default-config.yaml); versitygw is started with the same pair.
const (
	hmacAccessKey  = "test-access-key"
	hmacSecretKey  = "test-secret-key"
	emulatorAPIKey = "test-api-key"
)

// s3Server is the one S3 server every tool of a run talks to.
type s3Server struct {
	kind     string // "emulator" or "versitygw"
	proc     *testproc.Process
	endpoint string // http://127.0.0.1:PORT
	iamURL   string // emulator only
	region   string
	http     *http.Client
}

func (s *s3Server) hasAudit() bool { return s.kind == "emulator" }

// startServer starts the chosen server on loopback with its data on disk
// under dir, as a separate process so that its CPU time can be measured.
func startServer(ctx context.Context, cfg *config, dir string, cl *cleanups) (*s3Server, error) {
	data := filepath.Join(dir, "server-data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	s := &s3Server{kind: cfg.server, http: &http.Client{Timeout: time.Minute}}
	logPath := filepath.Join(cfg.outDir, "logs", "server.log")
	switch cfg.server {
	case "emulator":
		ready := filepath.Join(dir, "emulator.ready")
		p, err := startProc("emulator", logPath, os.Environ(),
			filepath.Join(cfg.binDir, "cosmount-emulator"), "serve", "--data-dir", data,
			"--iam-listen", "127.0.0.1:0", "--cos-listen", "127.0.0.1:0", "--ready-file", ready)
		if err != nil {
			return nil, err
		}
		s.proc = p
		cl.add(func() { p.Stop(30 * time.Second) })
		line, err := waitFile(ctx, p, ready, time.Minute)
		if err != nil {
			return nil, err
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "iam="); ok {
				s.iamURL = v
			} else if v, ok := strings.CutPrefix(f, "cos="); ok {
				s.endpoint = v
			}
		}
		if s.endpoint == "" || s.iamURL == "" {
			return nil, fmt.Errorf("emulator ready file: unexpected content %q", line)
		}
		s.region = "us-south"
	case "versitygw":
		bin, err := versitygwBinary(ctx)
		if err != nil {
			return nil, err
		}
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		env := append(os.Environ(), "ROOT_ACCESS_KEY="+hmacAccessKey, "ROOT_SECRET_KEY="+hmacSecretKey)
		// --keep-alive: without it versitygw closes every connection after
		// one response, which would penalise request-heavy tools.
		p, err := startProc("versitygw", logPath, env, bin, "--port", "127.0.0.1:"+strconv.Itoa(port), "--keep-alive", "--quiet", "posix", data)
		if err != nil {
			return nil, err
		}
		s.proc = p
		cl.add(func() { p.Stop(30 * time.Second) })
		s.endpoint = "http://127.0.0.1:" + strconv.Itoa(port)
		s.region = "us-east-1"
		if err := waitTCP(ctx, p, "127.0.0.1:"+strconv.Itoa(port), time.Minute); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("--server %q: want emulator or versitygw", cfg.server)
	}
	return s, nil
}

// versitygwBinary finds versitygw or installs the pinned version with go install.
func versitygwBinary(ctx context.Context) (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	gobin, err := exec.CommandContext(ctx, "go", "env", "GOPATH").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOPATH: %w", err)
	}
	bin := filepath.Join(strings.TrimSpace(string(gobin)), "bin", "versitygw")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	logf("installing versitygw v1.8.0 with go install (about 1.5 min)")
	cmd := exec.CommandContext(ctx, "go", "install", "github.com/versity/versitygw/cmd/versitygw@v1.8.0")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go install versitygw: %w", err)
	}
	return bin, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitFile(ctx context.Context, p *testproc.Process, path string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return strings.TrimSpace(string(b)), nil
		}
		if p.Exited() {
			return "", fmt.Errorf("%s exited at start (%v); see its log", p.Name, p.Err())
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("%s: not ready after %s", p.Name, timeout)
}

func waitTCP(ctx context.Context, p *testproc.Process, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("%s exited at start (%v); see its log", p.Name, p.Err())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s: %s not accepting connections after %s", p.Name, addr, timeout)
}

// auditMark is a position in the emulator's audit log.
type auditMark int

// auditLength returns the current end of the audit log.
func (s *s3Server) auditLength(ctx context.Context) (auditMark, error) {
	if !s.hasAudit() {
		return 0, nil
	}
	// since=a huge index returns no entries but still the length header.
	resp, err := s.admin(ctx, http.MethodGet, "audit?since="+strconv.Itoa(1<<31-1))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	n, err := strconv.Atoi(resp.Header.Get("X-Audit-Length"))
	if err != nil {
		return 0, fmt.Errorf("audit: bad X-Audit-Length: %w", err)
	}
	return auditMark(n), nil
}

// requestsSince counts the S3 requests to bucket since mark, by operation.
func (s *s3Server) requestsSince(ctx context.Context, mark auditMark, bucket string) (map[string]int, error) {
	if !s.hasAudit() {
		return nil, nil
	}
	resp, err := s.admin(ctx, http.MethodGet, "audit?since="+strconv.Itoa(int(mark)))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	counts := map[string]int{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		var e struct {
			Service   string `json:"service"`
			Operation string `json:"operation"`
			Bucket    string `json:"bucket"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("audit entry: %w", err)
		}
		if e.Service == "cos" && e.Bucket == bucket {
			counts[e.Operation]++
		}
	}
	return counts, sc.Err()
}

// resetAudit forgets the audit log, so that the emulator's memory does not
// grow with the benchmark's hundreds of thousands of requests.
func (s *s3Server) resetAudit(ctx context.Context) error {
	if !s.hasAudit() {
		return nil
	}
	resp, err := s.admin(ctx, http.MethodDelete, "audit")
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

func (s *s3Server) admin(ctx context.Context, method, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.endpoint+"/_emulator/"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		resp.Body.Close()
		return nil, errors.New("emulator admin " + method + " " + path + ": " + resp.Status)
	}
	return resp, nil
}
