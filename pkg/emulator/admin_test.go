package emulator_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/cosmount/cosmount/pkg/emulator/audit"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
	"github.com/cosmount/cosmount/pkg/emulator/faults"
)

func admin(t *testing.T, env *emulatortest.Env, method, path, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, env.COSURL+"/_emulator/"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func readAudit(t *testing.T, env *emulatortest.Env, since int) ([]audit.Entry, int) {
	t.Helper()
	resp, body := admin(t, env, "GET", "audit?since="+strconv.Itoa(since), "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("GET audit: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var entries []audit.Entry
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		var e audit.Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		entries = append(entries, e)
	}
	next, err := strconv.Atoi(resp.Header.Get("X-Audit-Length"))
	if err != nil {
		t.Fatalf("X-Audit-Length: %v", err)
	}
	return entries, next
}

func TestAdminAPI(t *testing.T) {
	env := emulatortest.Start(t)

	if resp, body := admin(t, env, "GET", "health", ""); resp.StatusCode != 200 || body != "ok\n" {
		t.Errorf("health: %d %q", resp.StatusCode, body)
	}

	// Audit: entries as JSON lines, paged with X-Audit-Length; admin
	// requests themselves are not recorded.
	token := apiKeyToken(t, env)
	entries, next := readAudit(t, env, 0)
	if len(entries) != 1 || next != 1 || entries[0].Service != "iam" || entries[0].Status != 200 {
		t.Fatalf("audit after one exchange: %+v next %d", entries, next)
	}
	cos(t, env, "PUT", "/test-bucket/k", token, "v")
	entries, next = readAudit(t, env, next)
	if len(entries) != 1 || next != 2 || entries[0].Operation != "PutObject" || entries[0].PrincipalID != "ApiKey-test" {
		t.Fatalf("audit since 1: %+v next %d", entries, next)
	}

	// Faults through the API reach the right service only.
	resp, body := admin(t, env, "POST", "faults", `{"service":"cos","action":"fail","kind":"internal-error","count":2,"method":"GET"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("POST faults: %d %s", resp.StatusCode, body)
	}
	var st faults.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil || len(st.Rules) != 1 || st.Rules[0].Count != 2 {
		t.Errorf("POST faults answer %q (%v)", body, err)
	}
	apiKeyToken(t, env) // IAM is not affected
	for i := range 2 {
		if code, _ := cos(t, env, "GET", "/test-bucket/k", token, ""); code != 500 {
			t.Errorf("GET %d: %d, want 500", i, code)
		}
	}
	if code, _ := cos(t, env, "GET", "/test-bucket/k", token, ""); code != 200 {
		t.Errorf("GET after the faults: %d", code)
	}
	if resp, body := admin(t, env, "POST", "faults", `{"service":"iam","action":"latency","duration":"1ms"}`); resp.StatusCode != 200 {
		t.Errorf("iam latency: %d %s", resp.StatusCode, body)
	}
	resp, body = admin(t, env, "GET", "faults", "")
	var all map[string]faults.Status
	if err := json.Unmarshal([]byte(body), &all); err != nil || resp.StatusCode != 200 || all["iam"].Latency != "1ms" || all["cos"].Latency != "0s" {
		t.Errorf("GET faults: %d %q (%v)", resp.StatusCode, body, err)
	}

	// Access-token lifetime.
	if resp, body := admin(t, env, "POST", "access-token-lifetime", `{"lifetime":"7s"}`); resp.StatusCode != http.StatusNoContent {
		t.Errorf("access-token-lifetime: %d %s", resp.StatusCode, body)
	}
	if status, tr := exchange(t, env.IAMURL, url.Values{"grant_type": {grantAPIKey}, "apikey": {env.APIKey()}}); status != 200 || tr.ExpiresIn != 7 {
		t.Errorf("after setting 7s: status %d expires_in %d", status, tr.ExpiresIn)
	}

	// Reset of the audit log.
	if resp, _ := admin(t, env, "DELETE", "audit", ""); resp.StatusCode != http.StatusNoContent {
		t.Errorf("DELETE audit: %d", resp.StatusCode)
	}
	if entries, next := readAudit(t, env, 0); len(entries) != 0 || next != 0 {
		t.Errorf("audit after reset: %d entries, next %d", len(entries), next)
	}

	bad := []struct{ method, path, body string }{
		{"POST", "faults", `{"service":"s3","action":"clear"}`},
		{"POST", "faults", `{"service":"cos","action":"fail","kind":"meteor"}`},
		{"POST", "faults", `{"service":"cos","action":"clear","unknownField":1}`},
		{"POST", "faults", `not json`},
		{"POST", "access-token-lifetime", `{"lifetime":"10ms"}`},
		{"GET", "audit?since=-1", ""},
	}
	for _, b := range bad {
		if resp, body := admin(t, env, b.method, b.path, b.body); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s %s %s: %d %s, want 400", b.method, b.path, b.body, resp.StatusCode, body)
		}
	}
	if resp, _ := admin(t, env, "GET", "nothing-here", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown admin path: %d", resp.StatusCode)
	}
	if resp, _ := admin(t, env, "PUT", "faults", "{}"); resp.StatusCode != http.StatusMethodNotAllowed && resp.StatusCode != http.StatusNotFound {
		t.Errorf("PUT faults: %d", resp.StatusCode)
	}
}
