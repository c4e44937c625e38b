package cosserver

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/emulator/audit"
	"github.com/cosmount/cosmount/pkg/emulator/store"
)

// apiError is an S3 error response.
type apiError struct {
	Status  int
	Code    string
	Message string
	// Header is added to the response (e.g. Content-Range on 416).
	Header http.Header
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func errAccessDenied(msg string) *apiError {
	if msg == "" {
		msg = "Access Denied"
	}
	return &apiError{Status: http.StatusForbidden, Code: "AccessDenied", Message: msg}
}

func errInvalidArgument(msg string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: "InvalidArgument", Message: msg}
}

func errInvalidRequest(msg string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: "InvalidRequest", Message: msg}
}

func errMalformedXML() *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: "MalformedXML",
		Message: "The XML you provided was not well-formed or did not validate against our published schema."}
}

func errNotImplemented(msg string) *apiError {
	return &apiError{Status: http.StatusNotImplemented, Code: "NotImplemented", Message: msg}
}

func errNoSuchBucket() *apiError {
	return &apiError{Status: http.StatusNotFound, Code: "NoSuchBucket", Message: "The specified bucket does not exist."}
}

func errNoSuchKey() *apiError {
	return &apiError{Status: http.StatusNotFound, Code: "NoSuchKey", Message: "The specified key does not exist."}
}

func errPreconditionFailed() *apiError {
	return &apiError{Status: http.StatusPreconditionFailed, Code: "PreconditionFailed",
		Message: "At least one of the preconditions you specified did not hold."}
}

func errInternal() *apiError {
	return &apiError{Status: http.StatusInternalServerError, Code: "InternalError",
		Message: "We encountered an internal error. Please try again."}
}

func errEntityTooLarge() *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: "EntityTooLarge",
		Message: "Your proposed upload exceeds the maximum allowed object size."}
}

// errNoKeyForIfMatch is returned by a write precondition when If-Match names
// an object that does not exist; S3 answers that with 404 NoSuchKey.
var errNoKeyForIfMatch = errors.New("if-match on a missing object")

// storeError turns a Storage error into an S3 error.
func storeError(err error) *apiError {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, store.ErrNoSuchBucket):
		return errNoSuchBucket()
	case errors.Is(err, store.ErrNoSuchKey), errors.Is(err, errNoKeyForIfMatch):
		return errNoSuchKey()
	case errors.Is(err, store.ErrBucketExists):
		return &apiError{Status: http.StatusConflict, Code: "BucketAlreadyExists",
			Message: "The requested bucket name is not available. The bucket namespace is shared by all users of the system. Please select a different name and try again."}
	case errors.Is(err, store.ErrBucketNotEmpty):
		return &apiError{Status: http.StatusConflict, Code: "BucketNotEmpty", Message: "The bucket you tried to delete is not empty."}
	case errors.Is(err, store.ErrNoSuchUpload):
		return &apiError{Status: http.StatusNotFound, Code: "NoSuchUpload",
			Message: "The specified multipart upload does not exist. The upload ID might be invalid, or the multipart upload might have been aborted or completed."}
	case errors.Is(err, store.ErrInvalidPartOrder):
		return &apiError{Status: http.StatusBadRequest, Code: "InvalidPartOrder",
			Message: "The list of parts was not in ascending order. The parts list must be specified in order by part number."}
	case errors.Is(err, store.ErrInvalidPart):
		return &apiError{Status: http.StatusBadRequest, Code: "InvalidPart",
			Message: "One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag."}
	case errors.Is(err, store.ErrEntityTooSmall):
		return &apiError{Status: http.StatusBadRequest, Code: "EntityTooSmall",
			Message: "Your proposed upload is smaller than the minimum allowed object size."}
	case errors.Is(err, store.ErrPreconditionFailed):
		return errPreconditionFailed()
	case errors.Is(err, store.ErrInvalidBucketName):
		return &apiError{Status: http.StatusBadRequest, Code: "InvalidBucketName", Message: "The specified bucket is not valid."}
	case errors.Is(err, store.ErrInvalidArgument):
		return errInvalidArgument("Invalid Argument")
	case errors.Is(err, store.ErrNoSuchLifecycleConfiguration):
		return &apiError{Status: http.StatusNotFound, Code: "NoSuchLifecycleConfiguration", Message: "The lifecycle configuration does not exist."}
	case errors.Is(err, store.ErrKeyTooLong):
		return &apiError{Status: http.StatusBadRequest, Code: "KeyTooLongError", Message: "Your key is too long."}
	}
	return nil
}

// fail writes an error response: IBM's error XML, no body for HEAD.
func (s *Server) fail(rq *request, err error) {
	e := storeError(err)
	if e == nil {
		klog.ErrorS(err, "COS request failed", "requestID", rq.id, "operation", rq.op, "bucket", rq.bucket, "key", rq.key)
		e = errInternal()
	}
	audit.From(rq.r.Context()).SetError(e.Code)
	h := rq.w.Header()
	for k, vs := range e.Header {
		h[k] = vs
	}
	// Headers describing a successful object must not survive into an error.
	for _, k := range []string{"ETag", "Last-Modified", "Content-Range", "Accept-Ranges"} {
		if e.Header.Get(k) == "" {
			h.Del(k)
		}
	}
	for k := range h {
		if strings.HasPrefix(strings.ToLower(k), "x-amz-meta-") {
			h.Del(k)
		}
	}
	if rq.r.Method == http.MethodHead {
		h.Del("Content-Type")
		h.Del("Content-Length")
		rq.w.WriteHeader(e.Status)
		return
	}
	body := errorXML(e.Code, e.Message, resource(rq.bucket, rq.key), rq.id, e.Status)
	h.Set("Content-Type", "application/xml")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	rq.w.WriteHeader(e.Status)
	_, _ = rq.w.Write([]byte(body))
}

func resource(bucket, key string) string {
	switch {
	case bucket == "":
		return "/"
	case key == "":
		return "/" + bucket
	}
	return "/" + bucket + "/" + key
}

// errorXML renders IBM COS's error document exactly.
func errorXML(code, message, resource, requestID string, status int) string {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Error><Code>`)
	b.WriteString(xmlEscape(code))
	b.WriteString("</Code><Message>")
	b.WriteString(xmlEscape(message))
	b.WriteString("</Message><Resource>")
	b.WriteString(xmlEscape(resource))
	b.WriteString("</Resource><RequestId>")
	b.WriteString(xmlEscape(requestID))
	b.WriteString("</RequestId><httpStatusCode>")
	fmt.Fprintf(&b, "%d", status)
	b.WriteString("</httpStatusCode></Error>")
	return b.String()
}

func xmlEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '"':
			b.WriteString("&quot;")
		case '\'':
			b.WriteString("&apos;")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
