package cos

import (
	"errors"
	"net/http"

	smithy "github.com/aws/smithy-go"
)

// kindByCode maps S3/COS error codes to error kinds. Codes not listed fall
// back to the HTTP status (kindByStatus).
var kindByCode = map[string]error{
	"NoSuchKey":                 ErrNotFound,
	"NoSuchBucket":              ErrNotFound,
	"NoSuchUpload":              ErrNotFound,
	"NotFound":                  ErrNotFound,
	"AccessDenied":              ErrAccessDenied,
	"Forbidden":                 ErrAccessDenied,
	"InvalidAccessKeyId":        ErrAccessDenied,
	"SignatureDoesNotMatch":     ErrAccessDenied,
	"ExpiredToken":              ErrAccessDenied,
	"InvalidToken":              ErrAccessDenied,
	"PreconditionFailed":        ErrPreconditionFailed,
	"BucketNotEmpty":            ErrBucketNotEmpty,
	"BucketAlreadyExists":       ErrBucketAlreadyExists,
	"BucketAlreadyOwnedByYou":   ErrBucketAlreadyExists,
	"InvalidLocationConstraint": ErrInvalidLocationConstraint,
	"InvalidArgument":           ErrInvalidArgument,
	"InvalidRequest":            ErrInvalidArgument,
	"InvalidBucketName":         ErrInvalidArgument,
	"KeyTooLongError":           ErrInvalidArgument,
	"InvalidPart":               ErrInvalidArgument,
	"InvalidPartOrder":          ErrInvalidArgument,
	"EntityTooLarge":            ErrInvalidArgument,
	"MalformedXML":              ErrInvalidArgument,
	"InvalidRange":              ErrInvalidRange,
	"EntityTooSmall":            ErrEntityTooSmall,
	"SlowDown":                  ErrUnavailable,
	"ServiceUnavailable":        ErrUnavailable,
	"InternalError":             ErrUnavailable,
	"RequestTimeout":            ErrUnavailable,
}

func kindByStatus(status int) error {
	switch {
	case status == http.StatusNotFound:
		return ErrNotFound
	case status == http.StatusForbidden || status == http.StatusUnauthorized:
		return ErrAccessDenied
	case status == http.StatusPreconditionFailed:
		return ErrPreconditionFailed
	case status == http.StatusRequestedRangeNotSatisfiable:
		return ErrInvalidRange
	case status >= 500, status == http.StatusTooManyRequests, status == http.StatusRequestTimeout:
		return ErrUnavailable
	case status >= 400:
		return ErrInvalidArgument
	default:
		return ErrUnavailable
	}
}

// kindFor classifies an error by code, then by status.
func kindFor(code string, status int) error {
	if k, ok := kindByCode[code]; ok {
		return k
	}
	if status != 0 {
		return kindByStatus(status)
	}
	return ErrUnavailable
}

// mapError turns an SDK error into an *Error. It keeps the SDK error as Err
// (it names operation, status, request id and the server's message, never a
// credential) so errors.Is(err, context.Canceled) still works.
func mapError(op, bucket, key string, err error) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	e := &Error{Op: op, Bucket: bucket, Key: key, Err: err}

	var status interface{ HTTPStatusCode() int }
	if errors.As(err, &status) {
		e.StatusCode = status.HTTPStatusCode()
	}
	var rid interface{ ServiceRequestID() string }
	if errors.As(err, &rid) {
		e.RequestID = rid.ServiceRequestID()
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		e.Code = api.ErrorCode()
		e.Message = api.ErrorMessage()
	}
	var te *tokenError
	switch {
	case errors.As(err, &te):
		// No credential: nothing was sent. It is not COS refusing access
		// (a policy would, EACCES); the mount cannot work until the
		// credential is back, which the application sees as an I/O error.
		e.Kind = ErrNoCredentials
		e.Message = te.Error()
	case e.StatusCode == 0 && e.Code == "":
		// Network failure, canceled context or exhausted retries.
		e.Kind = ErrUnavailable
	default:
		e.Kind = kindFor(e.Code, e.StatusCode)
	}
	return e
}
