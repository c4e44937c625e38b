package faults

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/audit"
)

// serveBody is serve with a handler that reads the whole request body and
// answers with size bytes.
func serveBody(t *testing.T, size int) (*Injector, *httptest.Server) {
	t.Helper()
	inj := New(Options{Classify: S3Classifier("")})
	log := audit.NewLog(nil, 0)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
		w.Header().Set("Content-Length", "0")
		if r.Method == http.MethodGet {
			w.Header().Set("Content-Length", strconv.Itoa(size))
			_, _ = w.Write(bytes.Repeat([]byte("x"), size))
		}
	})
	srv := httptest.NewServer(log.Middleware("cos", inj.Middleware(h)))
	t.Cleanup(srv.Close)
	return inj, srv
}

func TestRandomRateAndCounts(t *testing.T) {
	inj, srv := serveBody(t, 10)
	if err := inj.SetRandom(Random{Rate: 0.1, Kinds: []Kind{InternalError, SlowDown}, Seed: 42}); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	failed := 0
	for i := 0; i < n; i++ {
		resp, _, err := do(t, srv, "GET", "/b/k", nil)
		if err != nil {
			t.Fatal(err)
		}
		switch resp.StatusCode {
		case 200:
		case 500, 503:
			failed++
		default:
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	// 10% of 2000 with a fixed seed: the binomial's standard deviation is
	// about 13, so [120, 280] cannot fail by chance.
	if failed < 120 || failed > 280 {
		t.Errorf("%d of %d requests faulted at rate 0.1", failed, n)
	}
	got := inj.Injected()
	if got[InternalError]+got[SlowDown] != int64(failed) || got[InternalError] == 0 || got[SlowDown] == 0 {
		t.Errorf("injected counts %v, %d failures seen", got, failed)
	}
	if s := inj.Status(); s.Random == nil || s.Random.Rate != 0.1 {
		t.Errorf("status %+v", s)
	}
	if err := inj.SetRandom(Random{Rate: 0}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if resp, _, err := do(t, srv, "GET", "/b/k", nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("after rate 0: %v %v", resp, err)
		}
	}
}

func TestRandomOperationsFilter(t *testing.T) {
	inj, srv := serveBody(t, 10)
	if err := inj.SetRandom(Random{Rate: 1, Kinds: []Kind{InternalError}, Operations: []string{"PutObject"}}); err != nil {
		t.Fatal(err)
	}
	if resp, _, err := do(t, srv, "GET", "/b/k", nil); err != nil || resp.StatusCode != 200 {
		t.Errorf("GET: %v %v", resp, err)
	}
	if resp, _, err := do(t, srv, "PUT", "/b/k", nil); err != nil || resp.StatusCode != 500 {
		t.Errorf("PUT: %v %v", resp, err)
	}
}

func TestResetMidBody(t *testing.T) {
	const size = 1 << 20
	t.Run("download", func(t *testing.T) {
		inj, srv := serveBody(t, size)
		if err := inj.SetRandom(Random{Rate: 1, Kinds: []Kind{ResetMidBody}, ResetAfter: 100 << 10}); err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Get(srv.URL + "/b/k")
		if err != nil {
			t.Fatalf("the headers should arrive before the reset: %v", err)
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err == nil || n >= size {
			t.Fatalf("read %d bytes, err %v; want a failure mid-body", n, err)
		}
		if n < 100<<10 {
			t.Errorf("only %d bytes arrived before the reset, want 100 KiB", n)
		}
	})
	t.Run("upload", func(t *testing.T) {
		inj, srv := serveBody(t, 0)
		if err := inj.SetRandom(Random{Rate: 1, Kinds: []Kind{ResetMidBody}, ResetAfter: 64 << 10}); err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("PUT", srv.URL+"/b/k", bytes.NewReader(make([]byte, 8<<20)))
		resp, err := srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("upload completed with %d; want a connection failure", resp.StatusCode)
		}
		t.Logf("upload failed as it should: %v", err)
	})
	t.Run("short body is cut too", func(t *testing.T) {
		inj, srv := serveBody(t, 10)
		if err := inj.FailNext(Rule{Kind: ResetMidBody, Count: 1}); err != nil {
			t.Fatal(err)
		}
		if _, body, err := do(t, srv, "GET", "/b/k", nil); err == nil {
			t.Errorf("got a complete response %q; want a failure", body)
		}
	})
}

func TestSlowServesTheRequest(t *testing.T) {
	inj, srv := serveBody(t, 10)
	if err := inj.SetRandom(Random{Rate: 1, Kinds: []Kind{Slow}, SlowDelay: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	resp, body, err := do(t, srv, "GET", "/b/k", nil)
	if err != nil || resp.StatusCode != 200 || body != "xxxxxxxxxx" {
		t.Fatalf("slow request: %v %q %v", resp, body, err)
	}
	if got := inj.Injected()[Slow]; got != 1 {
		t.Errorf("injected slow faults: %d", got)
	}
}

func TestApplyRandom(t *testing.T) {
	inj := New(Options{})
	var c Command
	if err := json.Unmarshal([]byte(`{"action":"random","random":{"rate":0.1,"kinds":["reset-mid-body","slow"],"resetAfter":1024}}`), &c); err != nil {
		t.Fatal(err)
	}
	if err := inj.Apply(c); err != nil {
		t.Fatal(err)
	}
	s := inj.Status()
	if s.Random == nil || s.Random.ResetAfter != 1024 || len(s.Random.Kinds) != 2 || s.Random.SlowDelay != defaultSlowDelay {
		t.Errorf("status %+v", s.Random)
	}
	for _, bad := range []string{`{"action":"random"}`, `{"action":"random","random":{"rate":2}}`, `{"action":"random","random":{"rate":0.5,"kinds":["boom"]}}`} {
		var c Command
		if err := json.Unmarshal([]byte(bad), &c); err != nil {
			t.Fatal(err)
		}
		if err := inj.Apply(c); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
	inj.Clear()
	if inj.Status().Random != nil {
		t.Error("clear kept random faults")
	}
}
