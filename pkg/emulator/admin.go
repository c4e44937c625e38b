package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/faults"
)

// AdminPrefix is where the admin API lives on the COS listener. A bucket
// name cannot contain '_', so no S3 request can reach it.
//
// The admin API is unauthenticated: it is meant for a loopback listener.
//
//	GET    /_emulator/health                 200 "ok"
//	GET    /_emulator/audit[?since=N]        audit entries from index N on, as JSON lines;
//	                                         header X-Audit-Length: the index to pass next time
//	DELETE /_emulator/audit                  forget all entries
//	GET    /_emulator/faults                 {"iam": status, "cos": status}
//	POST   /_emulator/faults                 {"service":"cos"|"iam", "action":"fail"|"latency"|"unavailable"|"random"|"clear",
//	                                          "kind":"internal-error"|"slow-down"|"unavailable"|"reset"|"reset-mid-body"|"slow",
//	                                          "count":N, "method":"PUT", "operation":"PutObject", "pathContains":"...",
//	                                          "duration":"2s",
//	                                          "random":{"rate":0.1, "kinds":[...], "resetAfter":BYTES,
//	                                                    "slowDelay":NANOSECONDS, "operations":[...], "seed":N}}
//	POST   /_emulator/access-token-lifetime  {"lifetime":"2s"}: lifetime of access tokens issued from now on
const AdminPrefix = "/_emulator/"

// FaultRequest is the body of POST /_emulator/faults.
type FaultRequest struct {
	Service string `json:"service"`
	faults.Command
}

func (e *Emulator) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+AdminPrefix+"health", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET "+AdminPrefix+"audit", e.adminAudit)
	mux.HandleFunc("DELETE "+AdminPrefix+"audit", func(w http.ResponseWriter, r *http.Request) {
		e.audit.Reset()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET "+AdminPrefix+"faults", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]faults.Status{"iam": e.iamFaults.Status(), "cos": e.cosFaults.Status()})
	})
	mux.HandleFunc("POST "+AdminPrefix+"faults", e.adminFaults)
	mux.HandleFunc("POST "+AdminPrefix+"access-token-lifetime", e.adminTokenLifetime)
	mux.HandleFunc(AdminPrefix, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "unknown admin endpoint; see the emulator package documentation of AdminPrefix", http.StatusNotFound)
	})
	return mux
}

func (e *Emulator) adminAudit(w http.ResponseWriter, r *http.Request) {
	since := 0
	if s := r.URL.Query().Get("since"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			http.Error(w, "since: want a non-negative integer", http.StatusBadRequest)
			return
		}
		since = n
	}
	// Length first: entries added meanwhile are returned now and again next
	// time rather than never.
	length := e.audit.Len()
	entries := e.audit.Since(since)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Audit-Length", strconv.Itoa(length))
	enc := json.NewEncoder(w)
	for _, en := range entries {
		if err := enc.Encode(en); err != nil {
			return
		}
	}
}

func (e *Emulator) adminFaults(w http.ResponseWriter, r *http.Request) {
	var req FaultRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		http.Error(w, "fault request: "+err.Error(), http.StatusBadRequest)
		return
	}
	var inj *faults.Injector
	switch req.Service {
	case "iam":
		inj = e.iamFaults
	case "cos":
		inj = e.cosFaults
	default:
		http.Error(w, fmt.Sprintf("fault request: service %q: want iam or cos", req.Service), http.StatusBadRequest)
		return
	}
	if err := inj.Apply(req.Command); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	writeJSON(w, inj.Status())
}

func (e *Emulator) adminTokenLifetime(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Lifetime string `json:"lifetime"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		http.Error(w, "lifetime request: "+err.Error(), http.StatusBadRequest)
		return
	}
	d, err := time.ParseDuration(req.Lifetime)
	if err != nil || d < time.Second {
		http.Error(w, fmt.Sprintf("lifetime %q: want a Go duration of at least 1s", req.Lifetime), http.StatusBadRequest)
		return
	}
	e.SetAccessTokenLifetime(d)
	w.WriteHeader(http.StatusNoContent)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
