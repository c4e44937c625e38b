package fs

import (
	"context"
	"time"
)

// Interrupts and contexts.
//
// The kernel turns any signal that reaches a process blocked in a FUSE
// request into an INTERRUPT, and bazil cancels that request's context. Go
// programs get such signals all the time (SIGURG for goroutine preemption),
// as do programs with timers or children. If store calls ran on the request
// context, close() would fail with EINTR and abandon the upload (POSIX says
// close must not be retried), and open or stat would fail for no reason.
// So every operation runs its store calls on a context detached from the
// request (detach), which ends only when the filesystem stops being served
// or a generous timeout passes, because a request the kernel waits for
// must eventually be answered: a killed process stays in D state until then.
// Only Read waits on the request context, and only for data: an interrupted
// read returns EINTR and leaves the prefetched data for the retry.
const (
	// opTimeout bounds an operation that moves no file data (HEAD, LIST,
	// small PUT, COPY, DELETE), retries included.
	opTimeout = 2 * time.Minute
	// minTransferRate is the slowest link (bytes per second) for which an
	// operation that moves data is given enough time.
	minTransferRate = 1 * MiB
	// longOpTimeout bounds operations whose work is not known up front: a
	// directory listing (each page also gets opTimeout) and a directory
	// rename (every key below it; running out leaves the partial state of
	// any failed rename, see doc.go).
	longOpTimeout = time.Hour
)

// transferTimeout is the time allowed for an operation that moves size bytes.
func transferTimeout(size int64) time.Duration {
	if size < 0 {
		size = 0
	}
	return opTimeout + time.Duration(size/minTransferRate)*time.Second
}

// transferSize is what an operation on f may move: the object or the local
// content, whichever is larger.
func (f *File) transferSize() int64 {
	f.attrMu.Lock()
	defer f.attrMu.Unlock()
	return max(f.info.Size, f.contentSize)
}

// detach returns a context with the values of ctx that an interrupt cannot
// cancel: it ends when the filesystem is no longer served, or after timeout.
func (f *FS) detach(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	stop := context.AfterFunc(f.life, cancel)
	return dctx, func() {
		stop()
		cancel()
	}
}
