// Package faults owns the emulator's fault injection: HTTP middleware that,
// on command, answers requests with server errors or connection resets, slows
// every request down, or makes a whole service unavailable for a while. One
// Injector wraps one service (IAM or COS), so faults apply to each
// independently. Every method is safe for concurrent use, so tests can change
// faults while clients are busy.
package faults

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/emulator/audit"
)

// Kind is how a faulted request is answered.
type Kind string

// Fault kinds.
const (
	// InternalError answers 500 InternalError.
	InternalError Kind = "internal-error"
	// SlowDown answers 503 SlowDown, COS's throttling answer.
	SlowDown Kind = "slow-down"
	// ServiceUnavailable answers 503 ServiceUnavailable.
	ServiceUnavailable Kind = "unavailable"
	// Reset closes the connection with a TCP reset before any response byte.
	Reset Kind = "reset"
)

// ParseKind checks a kind name as used by the control API.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case InternalError, SlowDown, ServiceUnavailable, Reset, ResetMidBody, Slow:
		return k, nil
	}
	return "", fmt.Errorf("unknown fault kind %q (want %s, %s, %s, %s, %s or %s)", s, InternalError, SlowDown, ServiceUnavailable, Reset, ResetMidBody, Slow)
}

// Style is the error body format of the wrapped service.
type Style int

// Error body styles.
const (
	// StyleS3 writes IBM COS's XML error document.
	StyleS3 Style = iota
	// StyleIAM writes an IAM-like JSON error.
	StyleIAM
)

// Rule fails the next Count requests that match all of its non-empty filters.
type Rule struct {
	Kind  Kind `json:"kind"`
	Count int  `json:"count"`
	// Method matches the HTTP method (case-insensitive).
	Method string `json:"method,omitempty"`
	// Operation matches the operation name the injector's classifier gives
	// the request, e.g. "PutObject" or "Token".
	Operation string `json:"operation,omitempty"`
	// PathContains matches a substring of the URL path.
	PathContains string `json:"pathContains,omitempty"`
}

func (r *Rule) matches(req *http.Request, op string) bool {
	if r.Method != "" && !strings.EqualFold(r.Method, req.Method) {
		return false
	}
	if r.Operation != "" && r.Operation != op {
		return false
	}
	return r.PathContains == "" || strings.Contains(req.URL.Path, r.PathContains)
}

// Options configure an Injector.
type Options struct {
	// Style of the error bodies (default StyleS3).
	Style Style
	// Classify names the operation of a request for Rule.Operation
	// (default: no operation names, so only rules without Operation match).
	Classify func(*http.Request) string
	// Clock is the time source for unavailability windows (default time.Now).
	Clock func() time.Time
	// Name identifies the service in logs ("iam", "cos").
	Name string
}

// Injector holds the faults of one service.
type Injector struct {
	opts Options

	mu               sync.Mutex
	rules            []Rule
	latency          time.Duration
	unavailableUntil time.Time
	unavailableKind  Kind
	random           *randomState
	injected         map[Kind]int64
}

// New returns an injector with no faults.
func New(opts Options) *Injector {
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Classify == nil {
		opts.Classify = func(*http.Request) string { return "" }
	}
	return &Injector{opts: opts, injected: map[Kind]int64{}}
}

// FailNext queues a rule; rules are tried in the order they were added and a
// request is answered by the first one that matches.
func (i *Injector) FailNext(r Rule) error {
	if _, err := ParseKind(string(r.Kind)); err != nil {
		return err
	}
	if r.Count <= 0 {
		return fmt.Errorf("fault rule count %d: must be positive", r.Count)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.rules = append(i.rules, r)
	return nil
}

// SetLatency delays every request by d before it is served (0 turns it off).
func (i *Injector) SetLatency(d time.Duration) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.latency = max(d, 0)
}

// Unavailable answers every request with kind for the duration d from now.
// A non-positive d ends an unavailability early.
func (i *Injector) Unavailable(d time.Duration, kind Kind) error {
	if _, err := ParseKind(string(kind)); err != nil {
		return err
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.unavailableUntil = i.opts.Clock().Add(d)
	i.unavailableKind = kind
	return nil
}

// Clear removes every fault.
func (i *Injector) Clear() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.rules, i.latency, i.unavailableUntil, i.unavailableKind, i.random = nil, 0, time.Time{}, "", nil
}

// Status is a snapshot of the active faults.
type Status struct {
	Rules            []Rule    `json:"rules"`
	Latency          string    `json:"latency"`
	UnavailableUntil time.Time `json:"unavailableUntil,omitzero"`
	UnavailableKind  Kind      `json:"unavailableKind,omitempty"`
	Random           *Random   `json:"random,omitempty"`
	// Injected counts the faults answered so far, by kind.
	Injected map[Kind]int64 `json:"injected,omitempty"`
}

// Status returns the faults still pending.
func (i *Injector) Status() Status {
	i.mu.Lock()
	defer i.mu.Unlock()
	s := Status{Rules: append([]Rule{}, i.rules...), Latency: i.latency.String()}
	if i.opts.Clock().Before(i.unavailableUntil) {
		s.UnavailableUntil, s.UnavailableKind = i.unavailableUntil, i.unavailableKind
	}
	if i.random != nil {
		r := i.random.Random
		s.Random = &r
	}
	s.Injected = make(map[Kind]int64, len(i.injected))
	for k, n := range i.injected {
		s.Injected[k] = n
	}
	return s
}

// decide picks the fault for one request, consuming a rule's count, and
// returns the latency to add. An unavailability window wins over rules,
// and rules win over random faults.
func (i *Injector) decide(req *http.Request) (Kind, time.Duration) {
	op := i.opts.Classify(req)
	i.mu.Lock()
	defer i.mu.Unlock()
	kind := i.pickLocked(req, op)
	if kind != "" {
		i.injected[kind]++
	}
	return kind, i.latency
}

func (i *Injector) pickLocked(req *http.Request, op string) Kind {
	if i.opts.Clock().Before(i.unavailableUntil) {
		return i.unavailableKind
	}
	for n := range i.rules {
		r := &i.rules[n]
		if !r.matches(req, op) {
			continue
		}
		kind := r.Kind
		r.Count--
		if r.Count == 0 {
			i.rules = append(i.rules[:n], i.rules[n+1:]...)
		}
		return kind
	}
	return i.drawLocked(op)
}

// params returns the ResetMidBody byte count and the Slow delay.
func (i *Injector) params() (resetAfter int64, slow time.Duration) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if r := i.random; r != nil {
		return r.ResetAfter, r.SlowDelay
	}
	return defaultResetAfter, defaultSlowDelay
}

// Middleware applies the injector's faults in front of next. Place it inside
// the audit middleware so that faulted requests are recorded as such.
func (i *Injector) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		kind, delay := i.decide(req)
		if delay > 0 && !sleep(req.Context(), delay) {
			return
		}
		if kind == "" {
			next.ServeHTTP(w, req)
			return
		}
		audit.From(req.Context()).SetFault(string(kind))
		klog.V(2).InfoS("Injected fault", "service", i.opts.Name, "fault", kind, "method", req.Method, "path", req.URL.Path)
		resetAfter, slow := i.params()
		switch kind {
		case Reset:
			resetConnection(w)
		case ResetMidBody:
			resetAfterBody(w, req, resetAfter, next)
		case Slow:
			if sleep(req.Context(), slow) {
				next.ServeHTTP(w, req)
			}
		default:
			i.writeError(w, req, kind)
		}
	})
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// resetConnection makes the client see ECONNRESET: with linger 0, closing a
// TCP socket sends RST instead of FIN.
func resetConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// HTTP/2 or a writer that cannot hijack: aborting the handler is the
		// closest thing the server offers (the stream or connection is torn down).
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

type errorText struct {
	status  int
	code    string
	message string
}

var s3Errors = map[Kind]errorText{
	InternalError:      {http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again."},
	SlowDown:           {http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate."},
	ServiceUnavailable: {http.StatusServiceUnavailable, "ServiceUnavailable", "The service is unavailable. Please try again later."},
}

// The IAM codes for server-side failures are not documented publicly; these
// are made up in IBM's BXNIM style, and clients only look at the status.
var iamErrors = map[Kind]errorText{
	InternalError:      {http.StatusInternalServerError, "BXNIM0500E", "Internal server error."},
	SlowDown:           {http.StatusServiceUnavailable, "BXNIM0503E", "Service temporarily unavailable, too many requests."},
	ServiceUnavailable: {http.StatusServiceUnavailable, "BXNIM0503E", "Service temporarily unavailable."},
}

func (i *Injector) writeError(w http.ResponseWriter, req *http.Request, kind Kind) {
	id := requestID()
	rec := audit.From(req.Context())
	rec.SetRequestID(id)
	if i.opts.Style == StyleIAM {
		e := iamErrors[kind]
		rec.SetError(e.code)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("transaction-id", id)
		w.Header().Set("ibm-cloud-service-name", "iam-identity")
		w.WriteHeader(e.status)
		fmt.Fprintf(w, `{"errorCode":%q,"errorMessage":%q,"context":{"requestId":%q,"requestType":"incoming.Identity_Token"}}`, e.code, e.message, id)
		return
	}
	e := s3Errors[kind]
	rec.SetError(e.code)
	w.Header().Set("x-amz-request-id", id)
	w.Header().Set("X-Clv-Request-Id", id)
	if req.Method == http.MethodHead {
		w.WriteHeader(e.status)
		return
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(e.status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Error><Code>%s</Code><Message>%s</Message><Resource>%s</Resource><RequestId>%s</RequestId><httpStatusCode>%d</httpStatusCode></Error>`,
		e.code, e.message, xmlEscape(req.URL.Path), id, e.status)
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// requestID makes a random UUID (version 4) as COS uses for request ids.
func requestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
