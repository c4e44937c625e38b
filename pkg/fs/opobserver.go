package fs

import (
	"context"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"time"

	"bazil.org/fuse"
	fusefs "bazil.org/fuse/fs"
	"golang.org/x/sys/unix"
)

// OpObserver is told about every FUSE request the filesystem answers: its
// operation in lower case as bazil names it (lookup, getattr, open, read,
// readdir, write, flush, release, create, ...), how long the answer took
// and the errno name it carried ("" for success). It is called on the
// request's goroutine, just before the answer is sent, and must not block.
type OpObserver interface {
	ObserveOp(op string, d time.Duration, errno string)
}

// maxTrackedOps bounds the requests opTracker remembers; the kernel keeps
// far fewer in flight (max_background and the threads asking), so more
// means answers are being missed, and the table starts over.
const maxTrackedOps = 1 << 16

// opTracker times FUSE requests between bazil's two hooks at the op
// boundary: Config.WithContext, called with each request before it is
// handled, and Config.Debug, which receives a message for each answer.
type opTracker struct {
	obs OpObserver
	now func() time.Time

	mu      sync.Mutex
	pending map[fuse.RequestID]trackedOp // guarded by mu
}

type trackedOp struct {
	op    string
	start time.Time
}

// serveConfig is bazil's server configuration: nil (its defaults) unless
// an OpObserver is set.
func (f *FS) serveConfig() *fusefs.Config {
	if f.opts.Ops == nil {
		return nil
	}
	t := &opTracker{obs: f.opts.Ops, now: time.Now, pending: map[fuse.RequestID]trackedOp{}}
	return &fusefs.Config{WithContext: t.started, Debug: t.debug}
}

// started records a request; it returns ctx unchanged.
func (t *opTracker) started(ctx context.Context, req fuse.Request) context.Context {
	var op string
	switch r := req.(type) {
	case *fuse.BatchForgetRequest, *fuse.NotifyReply:
		// Answered without a message bazil reports (BatchForget), or not a
		// request of the kernel's at all.
		return ctx
	case *fuse.ReadRequest:
		op = "read"
		if r.Dir {
			op = "readdir"
		}
	default:
		op = requestName(req)
	}
	t.mu.Lock()
	if len(t.pending) >= maxTrackedOps {
		clear(t.pending)
	}
	t.pending[req.Hdr().ID] = trackedOp{op: op, start: t.now()}
	t.mu.Unlock()
	return ctx
}

// debug receives bazil's log messages; the one for an answer (an
// unexported struct of bazil.org/fuse/fs named "response" with the fields
// Request.ID and Errno) ends the request's timing.
func (t *opTracker) debug(msg interface{}) {
	v := reflect.Indirect(reflect.ValueOf(msg))
	if v.Kind() != reflect.Struct || v.Type().Name() != "response" || v.Type().PkgPath() != "bazil.org/fuse/fs" {
		return
	}
	hdr := v.FieldByName("Request")
	if !hdr.IsValid() || hdr.Kind() != reflect.Struct {
		return
	}
	id := hdr.FieldByName("ID")
	errno := v.FieldByName("Errno")
	if !id.IsValid() || id.Kind() != reflect.Uint64 || !errno.IsValid() || errno.Kind() != reflect.String {
		return
	}
	name := errno.String()
	if name == "" {
		// The answer to a request for a node bazil no longer has (ESTALE)
		// carries its errno in Error alone; elsewhere Error only comes
		// with an Errno.
		if e := v.FieldByName("Error"); e.IsValid() && e.Kind() == reflect.String {
			name = e.String()
		}
	}
	t.mu.Lock()
	op, ok := t.pending[fuse.RequestID(id.Uint())]
	delete(t.pending, fuse.RequestID(id.Uint()))
	t.mu.Unlock()
	if ok {
		t.obs.ObserveOp(op.op, t.now().Sub(op.start), errnoName(name))
	}
}

// errnoNames maps an errno's message to its name, for the errnos bazil
// has no name for (it then reports the message, "operation not
// supported" for ENOTSUP).
var errnoNames = func() map[string]string {
	m := map[string]string{}
	for e := syscall.Errno(1); e < 256; e++ {
		if name := unix.ErrnoName(e); name != "" {
			m[e.Error()] = name
		}
	}
	return m
}()

// errnoName returns the errno's name ("" for success).
func errnoName(s string) string {
	if name, ok := errnoNames[s]; ok {
		return name
	}
	return s
}

// requestNames caches the operation name of each request type: "getattr"
// for *fuse.GetattrRequest. Reflection once per type, not per request.
var requestNames sync.Map // reflect.Type -> string

func requestName(req fuse.Request) string {
	typ := reflect.TypeOf(req)
	if name, ok := requestNames.Load(typ); ok {
		return name.(string)
	}
	name := strings.ToLower(strings.TrimSuffix(reflect.Indirect(reflect.ValueOf(req)).Type().Name(), "Request"))
	requestNames.Store(typ, name)
	return name
}
