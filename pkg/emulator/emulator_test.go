package emulator_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator"
	"github.com/cosmount/cosmount/pkg/emulator/audit"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
	"github.com/cosmount/cosmount/pkg/emulator/faults"
)

const (
	grantAPIKey  = "urn:ibm:params:oauth:grant-type:apikey"
	grantCRToken = "urn:ibm:params:oauth:grant-type:cr-token"
)

type tokenResponse struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	ErrorCode   string `json:"errorCode"`
}

// exchange posts a token request and returns the status and decoded body.
func exchange(t *testing.T, iamURL string, form url.Values) (int, tokenResponse) {
	t.Helper()
	resp, err := http.PostForm(iamURL+"/identity/token", form)
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	defer resp.Body.Close()
	var tr tokenResponse
	b, _ := io.ReadAll(resp.Body)
	if len(b) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &tr); err != nil {
			t.Fatalf("token response %d: %v", resp.StatusCode, err)
		}
	}
	return resp.StatusCode, tr
}

func apiKeyToken(t *testing.T, env *emulatortest.Env) string {
	t.Helper()
	status, tr := exchange(t, env.IAMURL, url.Values{"grant_type": {grantAPIKey}, "apikey": {env.APIKey()}, "response_type": {"cloud_iam"}})
	if status != http.StatusOK || tr.AccessToken == "" {
		t.Fatalf("apikey exchange: status %d, error %q", status, tr.ErrorCode)
	}
	return tr.AccessToken
}

// cos sends one COS request with a bearer token and returns status and body.
func cos(t *testing.T, env *emulatortest.Env, method, path, token, body string) (int, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, env.COSURL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, path, err)
	}
	return resp.StatusCode, string(b)
}

func TestDefaultConfig(t *testing.T) {
	if !strings.Contains(string(emulator.DefaultConfigYAML()), emulator.DataDirVar) {
		t.Fatalf("embedded configuration does not use %s", emulator.DataDirVar)
	}
	if _, err := emulator.DefaultConfig(""); err == nil {
		t.Error("DefaultConfig without a data dir: no error")
	}
	dir := t.TempDir()
	cfg, err := emulator.DefaultConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Issuers) != 1 || cfg.Issuers[0].JWKSFile != emulator.IssuerJWKSFile(dir) || cfg.Issuers[0].Cluster != emulator.DefaultCluster {
		t.Errorf("issuers %+v", cfg.Issuers)
	}
	profiles := map[string]string{}
	for _, p := range cfg.Profiles {
		profiles[p.ID] = p.Name + "/" + string(p.Policies[0].Role) + "/" + p.Links[0].Namespace + "/" + p.Links[0].ServiceAccount
	}
	want := map[string]string{
		emulator.DefaultWriterProfileID: "cosmount-writer/Manager/default/default",
		emulator.DefaultReaderProfileID: "cosmount-reader/Reader/readers/default",
	}
	for id, w := range want {
		if profiles[id] != w {
			t.Errorf("profile %s: %q, want %q", id, profiles[id], w)
		}
	}
	if len(cfg.APIKeys) != 1 || cfg.APIKeys[0].ID != emulator.DefaultAPIKeyID || cfg.APIKeys[0].Key != emulator.DefaultAPIKey ||
		len(cfg.HMACKeys) != 1 || cfg.HMACKeys[0].AccessKeyID != emulator.DefaultHMACAccessKeyID ||
		len(cfg.ServiceInstances) != 1 || cfg.ServiceInstances[0].ID != emulator.DefaultServiceInstanceID {
		t.Errorf("credentials or instances differ from the documented fixtures: %+v %+v %+v", cfg.APIKeys, cfg.HMACKeys, cfg.ServiceInstances)
	}
	if _, err := emulator.ParseConfig([]byte("bogusField: 1\n"), dir); err == nil {
		t.Error("unknown field accepted")
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	cfg, err := emulator.DefaultConfig(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := emulator.New(cfg, emulator.Options{}); err == nil {
		t.Error("New without DataDir: no error")
	}
	if _, err := emulator.New(nil, emulator.Options{DataDir: t.TempDir()}); err == nil {
		t.Error("New without config: no error")
	}
}

// A pod of the writer profile's namespace writes; a reader-profile pod reads
// but cannot write: IAM, the token, COS and the policies are wired together.
func TestTrustedProfilesEndToEnd(t *testing.T) {
	env := emulatortest.Start(t)
	podToken := func(ns, profile string) (int, tokenResponse) {
		return exchange(t, env.IAMURL, url.Values{
			"grant_type": {grantCRToken},
			"cr_token":   {env.MintPodToken(t, ns, "default", "pod-1", time.Hour) + "\n"},
			"profile_id": {profile},
		})
	}
	status, writer := podToken("default", emulatortest.WriterProfileID)
	if status != http.StatusOK {
		t.Fatalf("writer exchange: %d %s", status, writer.ErrorCode)
	}
	n := env.AuditLen()
	if st, _ := cos(t, env, "PUT", "/test-bucket/hello.txt", writer.AccessToken, "hello"); st != http.StatusOK {
		t.Fatalf("writer PUT: %d", st)
	}
	entries := env.AuditSince(n)
	if len(entries) != 1 || entries[0].Operation != "PutObject" || entries[0].PrincipalID != emulatortest.WriterProfileID ||
		entries[0].AuthScheme != "bearer" || entries[0].Service != "cos" {
		t.Errorf("audit %+v", entries)
	}
	if status, _ := podToken("default", emulatortest.ReaderProfileID); status != http.StatusBadRequest {
		t.Errorf("namespace default for the reader profile: status %d, want 400", status)
	}
	status, reader := podToken("readers", emulatortest.ReaderProfileID)
	if status != http.StatusOK {
		t.Fatalf("reader exchange: %d %s", status, reader.ErrorCode)
	}
	if st, body := cos(t, env, "GET", "/test-bucket/hello.txt", reader.AccessToken, ""); st != http.StatusOK || body != "hello" {
		t.Errorf("reader GET: %d %q", st, body)
	}
	if st, body := cos(t, env, "PUT", "/test-bucket/x", reader.AccessToken, "x"); st != http.StatusForbidden || !strings.Contains(body, "<Code>AccessDenied</Code>") {
		t.Errorf("reader PUT: %d %s", st, body)
	}
}

func TestRestartKeepsDataAndTokens(t *testing.T) {
	env := emulatortest.Start(t)
	token := apiKeyToken(t, env)
	podTok := env.MintPodToken(t, "default", "default", "pod-1", time.Hour)
	if st, _ := cos(t, env, "PUT", "/test-bucket/dir/kept.txt", token, "survives"); st != http.StatusOK {
		t.Fatalf("PUT: %d", st)
	}
	oldCOS := env.COSURL

	env.Restart(t)

	if env.COSURL != oldCOS {
		t.Fatalf("COS moved from %s to %s", oldCOS, env.COSURL)
	}
	if n := env.AuditLen(); n != 0 {
		t.Errorf("audit after restart has %d entries, want a fresh log", n)
	}
	// The access token issued before the restart is still accepted ...
	if st, body := cos(t, env, "GET", "/test-bucket/dir/kept.txt", token, ""); st != http.StatusOK || body != "survives" {
		t.Errorf("GET with the old token: %d %q", st, body)
	}
	// ... and so is a pod token of the issuer key generated before it.
	status, tr := exchange(t, env.IAMURL, url.Values{"grant_type": {grantCRToken}, "cr_token": {podTok}, "profile_name": {emulatortest.WriterProfileName}})
	if status != http.StatusOK {
		t.Fatalf("pod token minted before the restart: %d %s", status, tr.ErrorCode)
	}
	if st, _ := cos(t, env, "HEAD", "/test-bucket", tr.AccessToken, ""); st != http.StatusOK {
		t.Errorf("HEAD bucket: %d", st)
	}
}

func TestFaultsEndToEnd(t *testing.T) {
	env := emulatortest.Start(t)
	token := apiKeyToken(t, env)

	if err := env.COSFaults().FailNext(faults.Rule{Kind: faults.SlowDown, Count: 1, Operation: "PutObject"}); err != nil {
		t.Fatal(err)
	}
	n := env.AuditLen()
	if st, _ := cos(t, env, "GET", "/test-bucket?list-type=2", token, ""); st != http.StatusOK {
		t.Errorf("list, not targeted: %d", st)
	}
	if st, body := cos(t, env, "PUT", "/test-bucket/a", token, "a"); st != http.StatusServiceUnavailable || !strings.Contains(body, "<Code>SlowDown</Code>") {
		t.Errorf("faulted PUT: %d %s", st, body)
	}
	if st, _ := cos(t, env, "PUT", "/test-bucket/a", token, "a"); st != http.StatusOK {
		t.Errorf("PUT after the fault: %d", st)
	}
	got := env.AuditSince(n)
	if len(got) != 3 || got[1].Fault != string(faults.SlowDown) || got[1].Status != 503 || got[0].Fault != "" || got[2].Fault != "" {
		t.Errorf("audit %+v", got)
	}

	// IAM down does not take COS down, and vice versa.
	if err := env.IAMFaults().Unavailable(time.Hour, faults.ServiceUnavailable); err != nil {
		t.Fatal(err)
	}
	if status, _ := exchange(t, env.IAMURL, url.Values{"grant_type": {grantAPIKey}, "apikey": {env.APIKey()}}); status != http.StatusServiceUnavailable {
		t.Errorf("IAM while unavailable: %d", status)
	}
	if st, _ := cos(t, env, "GET", "/test-bucket/a", token, ""); st != http.StatusOK {
		t.Errorf("COS while IAM is down: %d", st)
	}
	env.IAMFaults().Clear()
	apiKeyToken(t, env)

	if err := env.COSFaults().FailNext(faults.Rule{Kind: faults.Reset, Count: 1, PathContains: "/a"}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", env.COSURL+"/test-bucket/a", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	// A fresh connection: on a reused one, net/http silently retries a GET
	// that was reset before any response byte, and the retry succeeds.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := client.Do(req); !errors.Is(err, syscall.ECONNRESET) {
		if err == nil {
			resp.Body.Close()
		}
		t.Errorf("reset fault: got %v, want a connection reset", err)
	}
}

func TestAuditFile(t *testing.T) {
	dir := t.TempDir()
	cfg, err := emulator.DefaultConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	auditPath := filepath.Join(t.TempDir(), "audit.jsonl")
	em, err := emulator.New(cfg, emulator.Options{DataDir: dir, AuditFile: auditPath, NoSync: true, Buckets: emulator.DefaultBuckets()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = em.Close() })
	iamL, cosL := listen(t), listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- em.Serve(ctx, iamL, cosL) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	resp, err := http.PostForm("http://"+iamL.Addr().String()+"/identity/token", url.Values{"grant_type": {grantAPIKey}, "apikey": {"wrong"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = http.Get("http://" + cosL.Addr().String() + "/test-bucket/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	f, err := os.Open(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var entries []audit.Entry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e audit.Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		entries = append(entries, e)
	}
	if len(entries) != 2 || entries[0].Service != "iam" || entries[0].Status != 400 || entries[1].Service != "cos" || entries[1].Status != 403 {
		t.Errorf("audit file entries %+v", entries)
	}
	if b, _ := os.ReadFile(auditPath); strings.Contains(string(b), "wrong") {
		t.Error("audit file contains the submitted API key")
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}
