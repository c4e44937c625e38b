// Package cos is cosmount's object client for IBM Cloud Object Storage (and
// any S3-compatible server), built on aws-sdk-go-v2. It owns authentication
// (IAM bearer tokens or HMAC SigV4), retries, typed errors and bucket
// administration. It never imports FUSE or CSI code.
package cos

import (
	"errors"
	"fmt"
	"time"
)

// ObjectInfo describes one object as HEAD, GET or a listing reports it.
// Metadata holds user metadata without the "x-amz-meta-" prefix, keys lower-case
// (for example "mode", "uid", "gid", "mtime" as s3fs writes them).
// Listings do not carry Metadata or ContentType.
type ObjectInfo struct {
	Key          string
	Size         int64
	ETag         string // without surrounding quotes
	LastModified time.Time
	ContentType  string
	Metadata     map[string]string
}

// ListOptions selects one page of a ListObjectsV2 listing.
type ListOptions struct {
	Prefix            string
	Delimiter         string
	ContinuationToken string
	StartAfter        string
	MaxKeys           int32 // 0 means the server default (1000)
}

// ListPage is one page of a listing. NextContinuationToken is empty on the last page.
type ListPage struct {
	Objects               []ObjectInfo
	CommonPrefixes        []string
	NextContinuationToken string
}

// GetOptions restricts a GET. Length < 0 (or 0 with Offset 0) means "to the end".
type GetOptions struct {
	Offset  int64
	Length  int64
	IfMatch string // ETag without quotes; PreconditionFailed if it changed
}

// PutOptions carries what a PUT or a multipart create sets on the object.
type PutOptions struct {
	ContentType string
	Metadata    map[string]string
	IfMatch     string // ETag without quotes
	IfNoneMatch string // "*" to create only if absent
}

// CopyOptions controls a server-side copy. With ReplaceMetadata the copy gets
// Metadata/ContentType instead of the source's (metadata directive REPLACE).
type CopyOptions struct {
	ReplaceMetadata bool
	Metadata        map[string]string
	ContentType     string
	IfMatch         string // source ETag must match
}

// CompletedPart names one uploaded part of a multipart upload.
type CompletedPart struct {
	PartNumber int32
	ETag       string
}

// BucketInfo is one entry of a bucket listing.
type BucketInfo struct {
	Name         string
	CreationDate time.Time
}

// Error kinds. Errors returned by the client wrap exactly one of these (test
// with errors.Is) inside an *Error that keeps the request id and the
// server's code and message.
var (
	ErrNotFound                  = errors.New("not found")                   // NoSuchKey, NoSuchBucket, NoSuchUpload, 404
	ErrAccessDenied              = errors.New("access denied")               // 403
	ErrPreconditionFailed        = errors.New("precondition failed")         // 412
	ErrBucketNotEmpty            = errors.New("bucket not empty")            // BucketNotEmpty
	ErrBucketAlreadyExists       = errors.New("bucket already exists")       // BucketAlreadyExists / BucketAlreadyOwnedByYou
	ErrInvalidLocationConstraint = errors.New("invalid location constraint") // InvalidLocationConstraint
	ErrInvalidArgument           = errors.New("invalid argument")            // InvalidArgument, 400 of other kinds
	ErrInvalidRange              = errors.New("invalid range")               // 416
	ErrEntityTooSmall            = errors.New("entity too small")            // EntityTooSmall (multipart part < 5 MiB)
	ErrUnavailable               = errors.New("service unavailable")         // 5xx / SlowDown after retries, network failures
	// ErrNoCredentials: the request was not sent because no usable
	// credential could be had (IAM refused or could not be reached, the
	// token or key file is missing or expired). The *Error also wraps the
	// cause (an iam.Error, an fs.PathError) for errors.Is.
	ErrNoCredentials = errors.New("no usable credentials")
)

// Error is a failed COS request.
type Error struct {
	Op         string // e.g. "PutObject"
	Bucket     string
	Key        string
	StatusCode int
	Code       string // S3 error code, e.g. "NoSuchKey"
	Message    string
	RequestID  string
	Kind       error // one of the Err* values above
	Err        error // underlying error, if any (never contains credentials)
}

func (e *Error) Error() string {
	s := fmt.Sprintf("cos %s", e.Op)
	if e.Bucket != "" {
		s += " " + e.Bucket
		if e.Key != "" {
			s += "/" + e.Key
		}
	}
	if e.StatusCode != 0 {
		s += fmt.Sprintf(": %d", e.StatusCode)
	}
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	} else if e.Err != nil {
		s += ": " + e.Err.Error()
	} else if e.Kind != nil {
		s += ": " + e.Kind.Error()
	}
	if e.RequestID != "" {
		s += " (request id " + e.RequestID + ")"
	}
	return s
}

// Unwrap lets errors.Is match both the kind and the underlying error.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}
