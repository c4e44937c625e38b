package fs

import (
	"context"
	"errors"
	"syscall"

	"github.com/cosmount/cosmount/pkg/cos"
)

// errno turns any error of this package or of the object store into the errno
// the kernel sees. It is the only place where that mapping is decided; every
// FUSE method returns errno(err).
//
// PreconditionFailed becomes ESTALE: it only happens when an ETag condition
// fails, that is when the object was replaced by another writer after this
// mount looked at it; the open file then refers to data that no longer
// exists, which is what ESTALE says. EIO would suggest a transient device
// fault and invite a pointless retry.
func errno(err error) error {
	if err == nil {
		return nil
	}
	var e syscall.Errno
	switch {
	case errors.Is(err, context.Canceled):
		// Only a read waits on the request's context (see ctx.go): an
		// interrupted read, or an operation cut short by the unmount.
		return syscall.EINTR
	case errors.Is(err, context.DeadlineExceeded):
		// An operation that ran out of time (ctx.go) is a store failure.
		return syscall.EIO
	case errors.Is(err, cos.ErrNoCredentials):
		// No token or key could be had (IAM down, a credential file missing
		// or expired): the store is unreachable for now, as for a network
		// failure. EACCES would tell the application its permissions are
		// wrong, which a retry after the credential is back proves false.
		// The reason is logged by FS.fail.
		return syscall.EIO
	case errors.Is(err, cos.ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, cos.ErrAccessDenied):
		return syscall.EACCES
	case errors.Is(err, cos.ErrPreconditionFailed):
		return syscall.ESTALE
	case errors.Is(err, cos.ErrUnavailable), errors.Is(err, cos.ErrInvalidArgument),
		errors.Is(err, cos.ErrEntityTooSmall), errors.Is(err, cos.ErrInvalidRange):
		// Store kinds are checked before raw errnos: a network failure wraps
		// ECONNREFUSED and friends, which mean nothing to the application.
		return syscall.EIO
	case errors.As(err, &e):
		// Errnos this package decided itself (ENOTEMPTY, EROFS, ...).
		return e
	default:
		return syscall.EIO
	}
}
