// Package audit records every request the emulator serves (IAM and COS) so
// that tests and demos can see who did what: method, bucket, key, status, the
// authenticated principal and the auth scheme. It never records credentials.
package audit

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"
)

// Entry is one served request.
type Entry struct {
	Time          time.Time `json:"time"`
	Service       string    `json:"service"` // "iam" or "cos"
	Method        string    `json:"method"`
	Path          string    `json:"path"`
	Operation     string    `json:"operation,omitempty"` // e.g. "PutObject", "ListObjectsV2", "Token"
	Bucket        string    `json:"bucket,omitempty"`
	Key           string    `json:"key,omitempty"`
	Status        int       `json:"status"`
	ErrorCode     string    `json:"errorCode,omitempty"`
	PrincipalType string    `json:"principalType,omitempty"` // "profile", "apikey", "hmac"
	PrincipalID   string    `json:"principalID,omitempty"`   // profile id, API key id or HMAC access key id
	AuthScheme    string    `json:"authScheme,omitempty"`    // "bearer", "sigv4", "" for anonymous / IAM
	Bytes         int64     `json:"bytes,omitempty"`         // request body bytes read
	RequestID     string    `json:"requestID,omitempty"`
	Fault         string    `json:"fault,omitempty"` // set when the request was answered by fault injection
}

// Log keeps entries in memory and optionally appends them as JSON lines to a writer.
type Log struct {
	mu      sync.Mutex
	entries []Entry
	w       io.Writer
	max     int
}

// NewLog returns a log that keeps at most max entries in memory (0: 1,000,000)
// and, if w is not nil, writes every entry to it as one JSON line.
func NewLog(w io.Writer, max int) *Log {
	if max <= 0 {
		max = 1_000_000
	}
	return &Log{w: w, max: max}
}

// Add records an entry.
func (l *Log) Add(e Entry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.entries) >= l.max {
		l.entries = l.entries[len(l.entries)/2:]
	}
	l.entries = append(l.entries, e)
	if l.w != nil {
		b, _ := json.Marshal(e)
		_, _ = l.w.Write(append(b, '\n'))
	}
}

// Entries returns a copy of the recorded entries, oldest first.
func (l *Log) Entries() []Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Entry(nil), l.entries...)
}

// Reset forgets all entries.
func (l *Log) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = nil
}

// Len is the number of entries so far: take it before an action and pass it
// to Since afterwards to see only that action's requests.
func (l *Log) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// Since returns a copy of the entries from index i on.
func (l *Log) Since(i int) []Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i > len(l.entries) {
		return nil
	}
	return append([]Entry(nil), l.entries[i:]...)
}

type ctxKey struct{}

// Record is the mutable part of an entry that handlers fill in while serving.
type Record struct {
	mu    sync.Mutex
	entry Entry
}

// From returns the record of the request being served, or nil outside the middleware.
func From(ctx context.Context) *Record {
	r, _ := ctx.Value(ctxKey{}).(*Record)
	return r
}

// SetPrincipal notes who made the request and how they authenticated.
func (r *Record) SetPrincipal(principalType, principalID, scheme string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entry.PrincipalType, r.entry.PrincipalID, r.entry.AuthScheme = principalType, principalID, scheme
}

// SetOperation notes the operation and its target.
func (r *Record) SetOperation(op, bucket, key string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entry.Operation, r.entry.Bucket, r.entry.Key = op, bucket, key
}

// SetError notes the error code the response carried.
func (r *Record) SetError(code string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entry.ErrorCode = code
}

// SetRequestID notes the request id the response carried.
func (r *Record) SetRequestID(id string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entry.RequestID = id
}

// SetFault notes that fault injection answered the request.
func (r *Record) SetFault(f string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entry.Fault = f
}

// Middleware records every request that next serves under the given service name.
func (l *Log) Middleware(service string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		rec := &Record{entry: Entry{Time: time.Now().UTC(), Service: service, Method: req.Method, Path: req.URL.Path}}
		cr := &countingBody{ReadCloser: req.Body}
		req.Body = cr
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, req.WithContext(context.WithValue(req.Context(), ctxKey{}, rec)))
		rec.mu.Lock()
		e := rec.entry
		rec.mu.Unlock()
		e.Status = sw.status
		e.Bytes = cr.n
		l.Add(e)
	})
}

type countingBody struct {
	io.ReadCloser
	n int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}

type statusWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wroteHeader {
		s.status, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.wroteHeader = true
	return s.ResponseWriter.Write(b)
}

// Flush passes flushes through so streaming responses keep working.
func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer (for Hijack in fault injection).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
