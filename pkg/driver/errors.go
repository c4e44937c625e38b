package driver

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/iam"
)

// toStatus is the one place where plain Go errors from the services and
// their dependencies become gRPC status errors. Errors that already carry a
// status (request validation) pass through unchanged.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return status.Error(se.GRPCStatus().Code(), err.Error())
	}
	return status.Error(codeOf(err), err.Error())
}

func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, iam.ErrNotEligible), errors.Is(err, iam.ErrBadCredentials):
		return codes.PermissionDenied
	case errors.Is(err, iam.ErrTransient):
		return codes.Unavailable
	case errors.Is(err, cos.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, cos.ErrAccessDenied):
		return codes.PermissionDenied
	case errors.Is(err, cos.ErrBucketAlreadyExists):
		return codes.AlreadyExists
	case errors.Is(err, cos.ErrInvalidLocationConstraint), errors.Is(err, cos.ErrInvalidArgument):
		return codes.InvalidArgument
	case errors.Is(err, cos.ErrUnavailable), errors.Is(err, cos.ErrNoCredentials):
		return codes.Unavailable
	}
	return codes.Internal
}
