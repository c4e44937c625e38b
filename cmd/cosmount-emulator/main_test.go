package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator"
	"github.com/cosmount/cosmount/pkg/emulator/satoken"
)

// The test binary doubles as the command: with this variable set it runs
// main's logic on its arguments, so serve can be tested as a real process
// (signals, exit status) without a separate build.
const beCommandEnv = "COSMOUNT_EMULATOR_TEST_BE_COMMAND"

func TestMain(m *testing.M) {
	if os.Getenv(beCommandEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args     []string
		code     int
		inStdout string
		inStderr string
	}{
		{nil, 2, "", "Commands:"},
		{[]string{"help"}, 0, "mint-token", ""},
		{[]string{"bogus"}, 2, "", `unknown command "bogus"`},
		{[]string{"serve", "--help"}, 0, "", "SIGTERM"},
		{[]string{"mint-token", "--help"}, 0, "", "kubernetes.io"},
		{[]string{"gen-issuer-key", "-h"}, 0, "", "jwks.json"},
		{[]string{"print-config", "--help"}, 0, "", "embedded default configuration"},
		{[]string{"serve"}, 2, "", "--data-dir is required"},
		{[]string{"serve", "--data-dir", "x", "--access-token-lifetime", "10ms"}, 2, "", "at least 1s"},
		{[]string{"serve", "--data-dir", "x", "--backend", "http://127.0.0.1:1"}, 2, "", "go together"},
		{[]string{"serve", "--nope"}, 2, "", "flag provided but not defined"},
		{[]string{"mint-token"}, 2, "", "exactly one of --issuer-key and --data-dir"},
		{[]string{"mint-token", "--data-dir", "x", "extra"}, 2, "", "unexpected argument"},
		{[]string{"gen-issuer-key"}, 2, "", "--out-dir is required"},
	}
	for _, tt := range tests {
		code, out, errOut := runCmd(tt.args...)
		if code != tt.code || !strings.Contains(out, tt.inStdout) || !strings.Contains(errOut, tt.inStderr) {
			t.Errorf("%q: exit %d (want %d)\nstdout: %s\nstderr: %s", tt.args, code, tt.code, out, errOut)
		}
	}
}

func TestPrintConfig(t *testing.T) {
	code, out, _ := runCmd("print-config")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	cfg, err := emulator.ParseConfig([]byte(out), t.TempDir())
	if err != nil {
		t.Fatalf("printed configuration does not load: %v", err)
	}
	if len(cfg.Profiles) != 2 {
		t.Errorf("profiles %+v", cfg.Profiles)
	}
}

func TestGenIssuerKeyAndMintToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	if code, _, errOut := runCmd("gen-issuer-key", "--out-dir", dir); code != 0 {
		t.Fatalf("gen-issuer-key: %d %s", code, errOut)
	}
	key, err := satoken.Load(filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key.pem mode: %v %v", fi.Mode(), err)
	}
	jwks, err := os.ReadFile(filepath.Join(dir, "jwks.json"))
	if err != nil {
		t.Fatal(err)
	}
	pubs, err := satoken.ParseJWKS(jwks)
	if err != nil || len(pubs) != 1 || pubs[0].KID != key.KID {
		t.Fatalf("jwks.json: %v, %d keys, want the one of key.pem (kid %s)", err, len(pubs), key.KID)
	}

	out := filepath.Join(t.TempDir(), "token")
	code, stdout, errOut := runCmd("mint-token", "--issuer-key", filepath.Join(dir, "key.pem"), "--issuer", "my-iss",
		"--namespace", "ns1", "--service-account", "sa1", "--pod", "p1", "--audience", "iam,other", "--lifetime", "10m", "--out", out)
	if code != 0 || stdout != "" {
		t.Fatalf("mint-token: %d stdout %q stderr %s", code, stdout, errOut)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	raw, _ := os.ReadFile(out)
	claims := decodeClaims(t, string(raw))
	kube, _ := claims["kubernetes.io"].(map[string]any)
	pod, _ := kube["pod"].(map[string]any)
	exp, iat := claims["exp"].(float64), claims["iat"].(float64)
	if claims["iss"] != "my-iss" || claims["sub"] != "system:serviceaccount:ns1:sa1" || kube["namespace"] != "ns1" ||
		pod["name"] != "p1" || exp-iat != 600 || len(claims["aud"].([]any)) != 2 {
		t.Errorf("claims %v", claims)
	}
}

// decodeClaims reads a JWT's payload without verifying it (the IAM tests
// verify signatures; here only the claims the flags set matter).
func decodeClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(strings.TrimSpace(tok), ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	var m map[string]any
	b, err := base64URL(parts[1])
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	if err != nil {
		t.Fatalf("token payload: %v", err)
	}
	return m
}

// TestServeProcess runs serve as a real process: ready file, a minted pod
// token accepted by its IAM, the default bucket, the admin API, and a clean
// exit on SIGTERM.
func TestServeProcess(t *testing.T) {
	dataDir, tmp := t.TempDir(), t.TempDir()
	ready := filepath.Join(tmp, "ready")
	auditFile := filepath.Join(tmp, "audit.jsonl")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "serve", "--data-dir", dataDir, "--iam-listen", "127.0.0.1:0",
		"--cos-listen", "127.0.0.1:0", "--ready-file", ready, "--audit-file", auditFile, "--access-token-lifetime", "90s")
	cmd.Env = append(os.Environ(), beCommandEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	var line string
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(ready); err == nil {
			line = string(b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ready file after 60s; stderr:\n%s", stderr.String())
		}
	}
	var iamURL, cosURL string
	for f := range strings.FieldsSeq(line) {
		if v, ok := strings.CutPrefix(f, "iam="); ok {
			iamURL = v
		}
		if v, ok := strings.CutPrefix(f, "cos="); ok {
			cosURL = v
		}
	}
	if iamURL == "" || cosURL == "" {
		t.Fatalf("ready file %q", line)
	}

	tokFile := filepath.Join(tmp, "pod-token")
	if code, _, errOut := runCmd("mint-token", "--data-dir", dataDir, "--pod", "demo", "--out", tokFile); code != 0 {
		t.Fatalf("mint-token: %s", errOut)
	}
	podTok, _ := os.ReadFile(tokFile)
	resp, err := http.PostForm(iamURL+"/identity/token", url.Values{
		"grant_type":   {"urn:ibm:params:oauth:grant-type:cr-token"},
		"cr_token":     {string(podTok)},
		"profile_name": {emulator.DefaultWriterProfileName},
	})
	if err != nil {
		t.Fatal(err)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	err = json.NewDecoder(resp.Body).Decode(&tr)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || tr.ExpiresIn != 90 {
		t.Fatalf("token exchange: %d %v expires_in %d", resp.StatusCode, err, tr.ExpiresIn)
	}
	req, _ := http.NewRequest("HEAD", cosURL+"/"+emulator.DefaultBucket, nil)
	req.Header.Set("Authorization", "Bearer "+tr.AccessToken)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("HEAD default bucket: %v %v", err, resp)
	}
	if resp, err := http.Get(cosURL + "/_emulator/health"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("admin health: %v %v", err, resp)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("still running 60s after SIGTERM")
	}
	b, err := os.ReadFile(auditFile)
	if err != nil || strings.Count(string(b), "\n") != 2 {
		t.Errorf("audit file: %v\n%s", err, b)
	}
	if strings.Contains(stderr.String(), tr.AccessToken) || strings.Contains(stderr.String(), strings.TrimSpace(string(podTok))) {
		t.Error("a token appears in the emulator's log")
	}
}

func base64URL(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
