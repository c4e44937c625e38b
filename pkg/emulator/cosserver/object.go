package cosserver

import (
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/config"
	"github.com/cosmount/cosmount/pkg/emulator/store"
)

const defaultContentType = "application/octet-stream"

// requestMeta collects Content-Type and x-amz-meta-* headers.
func requestMeta(h http.Header) store.ObjectMeta {
	m := map[string]string{}
	for k, vs := range h {
		if name, ok := strings.CutPrefix(strings.ToLower(k), "x-amz-meta-"); ok && name != "" {
			m[name] = strings.Join(vs, ",")
		}
	}
	return store.ObjectMeta{ContentType: h.Get("Content-Type"), Metadata: m}
}

// etagMatches reports whether an If-Match / If-None-Match list names etag.
func etagMatches(list, etag string) bool {
	for _, v := range strings.Split(list, ",") {
		v = strings.TrimSpace(v)
		v = strings.TrimPrefix(v, "W/")
		if v == "*" || strings.Trim(v, `"`) == etag {
			return true
		}
	}
	return false
}

// writePrecondition turns If-Match / If-None-Match of a write into a store
// precondition, evaluated atomically with the write.
func writePrecondition(h http.Header) store.Precondition {
	ifMatch, ifNone := h.Get("If-Match"), h.Get("If-None-Match")
	if ifMatch == "" && ifNone == "" {
		return nil
	}
	return func(existing *store.Object) error {
		if ifMatch != "" {
			if existing == nil {
				return errNoKeyForIfMatch
			}
			if !etagMatches(ifMatch, existing.ETag) {
				return store.ErrPreconditionFailed
			}
		}
		if ifNone != "" && existing != nil && etagMatches(ifNone, existing.ETag) {
			return store.ErrPreconditionFailed
		}
		return nil
	}
}

// readConditions evaluates the conditional headers of a GET or HEAD (in the
// order of RFC 9110 section 13.2.2): 0 to proceed, or 304 / 412.
func readConditions(h http.Header, prefix string, obj store.Object) int {
	lm := obj.LastModified.Truncate(time.Second)
	if v := h.Get(prefix + "If-Match"); v != "" {
		if !etagMatches(v, obj.ETag) {
			return http.StatusPreconditionFailed
		}
	} else if t, err := http.ParseTime(h.Get(prefix + "If-Unmodified-Since")); err == nil && lm.After(t) {
		return http.StatusPreconditionFailed
	}
	if v := h.Get(prefix + "If-None-Match"); v != "" {
		if etagMatches(v, obj.ETag) {
			return http.StatusNotModified
		}
	} else if t, err := http.ParseTime(h.Get(prefix + "If-Modified-Since")); err == nil && !lm.After(t) {
		return http.StatusNotModified
	}
	return 0
}

// parseRange interprets a Range header for an object of size bytes. ok is
// false when the whole object is to be sent (no, multiple or malformed ranges,
// which RFC 9110 says to ignore).
func parseRange(spec string, size int64) (start, length int64, ok bool, e *apiError) {
	unsatisfiable := func() (int64, int64, bool, *apiError) {
		return 0, 0, false, &apiError{Status: http.StatusRequestedRangeNotSatisfiable, Code: "InvalidRange",
			Message: "The requested range is not satisfiable",
			Header:  http.Header{"Content-Range": {"bytes */" + strconv.FormatInt(size, 10)}}}
	}
	r, found := strings.CutPrefix(strings.TrimSpace(spec), "bytes=")
	if !found || strings.Contains(r, ",") {
		return 0, size, false, nil
	}
	a, b, found := strings.Cut(strings.TrimSpace(r), "-")
	if !found {
		return 0, size, false, nil
	}
	if a == "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n < 0 {
			return 0, size, false, nil
		}
		if n == 0 || size == 0 {
			return unsatisfiable()
		}
		n = min(n, size)
		return size - n, n, true, nil
	}
	first, err := strconv.ParseInt(a, 10, 64)
	if err != nil || first < 0 {
		return 0, size, false, nil
	}
	last := size - 1
	if b != "" {
		if last, err = strconv.ParseInt(b, 10, 64); err != nil || last < first {
			return 0, size, false, nil
		}
	}
	if first >= size {
		return unsatisfiable()
	}
	last = min(last, size-1)
	return first, last - first + 1, true, nil
}

// setObjectHeaders writes the headers describing obj.
func setObjectHeaders(h http.Header, obj store.Object) {
	h.Set("ETag", `"`+obj.ETag+`"`)
	h.Set("Last-Modified", obj.LastModified.UTC().Format(http.TimeFormat))
	ct := obj.ContentType
	if ct == "" {
		ct = defaultContentType
	}
	h.Set("Content-Type", ct)
	for k, v := range obj.Metadata {
		h["X-Amz-Meta-"+http.CanonicalHeaderKey(k)] = []string{v}
	}
}

func (s *Server) getObject(rq *request) error {
	var (
		obj  store.Object
		body io.ReadSeekCloser
		err  error
	)
	if rq.r.Method == http.MethodHead {
		obj, err = s.storage.HeadObject(rq.bucket, rq.key)
	} else {
		obj, body, err = s.storage.OpenObject(rq.bucket, rq.key)
	}
	if err != nil {
		return err
	}
	if body != nil {
		defer body.Close()
	}
	h := rq.w.Header()
	switch readConditions(rq.r.Header, "", obj) {
	case http.StatusNotModified:
		h.Set("ETag", `"`+obj.ETag+`"`)
		h.Set("Last-Modified", obj.LastModified.UTC().Format(http.TimeFormat))
		rq.w.WriteHeader(http.StatusNotModified)
		return nil
	case http.StatusPreconditionFailed:
		return errPreconditionFailed()
	}
	start, length, partial, e := parseRange(rq.r.Header.Get("Range"), obj.Size)
	if e != nil {
		return e
	}
	setObjectHeaders(h, obj)
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	status := http.StatusOK
	if partial {
		status = http.StatusPartialContent
		h.Set("Content-Range", "bytes "+strconv.FormatInt(start, 10)+"-"+strconv.FormatInt(start+length-1, 10)+"/"+strconv.FormatInt(obj.Size, 10))
	}
	if body == nil {
		rq.w.WriteHeader(status)
		return nil
	}
	if start > 0 {
		if _, err := body.Seek(start, io.SeekStart); err != nil {
			return err
		}
	}
	rq.w.WriteHeader(status)
	// Once the status is out an error can only cut the body short; the
	// client sees a short read against Content-Length.
	_, _ = io.CopyN(rq.w, body, length)
	return nil
}

func (s *Server) putObject(rq *request) error {
	return storeBody(rq, func() (string, error) {
		obj, err := s.storage.PutObject(rq.bucket, rq.key, rq.body, requestMeta(rq.r.Header), writePrecondition(rq.r.Header))
		return obj.ETag, err
	})
}

// storeBody serves a request whose body becomes stored bytes (PutObject,
// UploadPart): it caps the body at the single-PUT limit, runs store, lets a
// body failure (short body, checksum mismatch) win over the store's error,
// and answers 200 with the ETag.
func storeBody(rq *request, store func() (etag string, err error)) error {
	if e := rq.body.limit(maxPutSize); e != nil {
		return e
	}
	etag, err := store()
	if f := rq.body.failure(); f != nil {
		return f
	}
	if err != nil {
		return err
	}
	rq.w.Header().Set("ETag", `"`+etag+`"`)
	rq.w.WriteHeader(http.StatusOK)
	return nil
}

// copySource is a parsed x-amz-copy-source.
type copySource struct{ bucket, key string }

func parseCopySource(v string) (*copySource, *apiError) {
	if i := strings.Index(v, "?versionId="); i >= 0 {
		v = v[:i]
	}
	dec, err := url.PathUnescape(v)
	if err != nil {
		return nil, errInvalidArgument("Copy Source must mention the source bucket and key: sourcebucket/sourcekey")
	}
	b, k, _ := strings.Cut(strings.TrimPrefix(dec, "/"), "/")
	if b == "" || k == "" {
		return nil, errInvalidArgument("Copy Source must mention the source bucket and key: sourcebucket/sourcekey")
	}
	return &copySource{bucket: b, key: k}, nil
}

type copyObjectResult struct {
	XMLName      xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ CopyObjectResult"`
	LastModified string   `xml:"LastModified"`
	ETag         string   `xml:"ETag"`
}

func (s *Server) copyObject(rq *request) error {
	src := rq.copySource
	srcObj, err := s.storage.HeadObject(src.bucket, src.key)
	if err != nil {
		return err
	}
	if readConditions(rq.r.Header, "X-Amz-Copy-Source-", srcObj) != 0 {
		return errPreconditionFailed()
	}
	var newMeta *store.ObjectMeta
	switch d := strings.ToUpper(rq.r.Header.Get("X-Amz-Metadata-Directive")); d {
	case "", "COPY":
		if src.bucket == rq.bucket && src.key == rq.key {
			return errInvalidRequest("This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.")
		}
	case "REPLACE":
		m := requestMeta(rq.r.Header)
		newMeta = &m
	default:
		return errInvalidArgument("Unknown metadata directive.")
	}
	obj, err := s.storage.CopyObject(src.bucket, src.key, rq.bucket, rq.key, newMeta, writePrecondition(rq.r.Header))
	if err != nil {
		return err
	}
	rq.w.Header().Set("ETag", `"`+obj.ETag+`"`)
	return writeXML(rq.w, http.StatusOK, copyObjectResult{LastModified: isoTime(obj.LastModified), ETag: `"` + obj.ETag + `"`})
}

func (s *Server) deleteObject(rq *request) error {
	if err := s.storage.DeleteObject(rq.bucket, rq.key, writePrecondition(rq.r.Header)); err != nil {
		return err
	}
	rq.w.WriteHeader(http.StatusNoContent)
	return nil
}

type deleteRequest struct {
	Quiet   bool `xml:"Quiet"`
	Objects []struct {
		Key string `xml:"Key"`
	} `xml:"Object"`
}

type deletedEntry struct {
	Key string `xml:"Key"`
}

type deleteErrorEntry struct {
	Key     string `xml:"Key"`
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

type deleteResult struct {
	XMLName xml.Name           `xml:"http://s3.amazonaws.com/doc/2006-03-01/ DeleteResult"`
	Deleted []deletedEntry     `xml:"Deleted"`
	Errors  []deleteErrorEntry `xml:"Error"`
}

// maxDeleteBody bounds a multi-object delete document (1,000 keys of 1 KiB each, plus markup).
const maxDeleteBody = 2 << 20

func (s *Server) deleteObjects(rq *request) error {
	if rq.r.Header.Get("Content-Md5") == "" && !hasChecksumHeader(rq.r.Header) {
		return errInvalidRequest("Missing required header for this request: Content-MD5")
	}
	raw, err := io.ReadAll(io.LimitReader(rq.body, maxDeleteBody+1))
	if f := rq.body.failure(); f != nil {
		return f
	}
	if err != nil {
		return err
	}
	var req deleteRequest
	if len(raw) > maxDeleteBody || xml.Unmarshal(raw, &req) != nil || len(req.Objects) == 0 || len(req.Objects) > 1000 {
		return errMalformedXML()
	}
	res := deleteResult{}
	for _, o := range req.Objects {
		if !rq.principal.Allows(config.ActionDeleteObject, bucketInstance(rq.bucketInfo), rq.bucket, config.ObjectResource(o.Key)) {
			e := errAccessDenied("")
			res.Errors = append(res.Errors, deleteErrorEntry{Key: o.Key, Code: e.Code, Message: e.Message})
			continue
		}
		err := s.storage.DeleteObject(rq.bucket, o.Key, nil)
		if err == nil {
			if !req.Quiet {
				res.Deleted = append(res.Deleted, deletedEntry{Key: o.Key})
			}
			continue
		}
		e := storeError(err)
		if e == nil {
			e = errInternal()
		}
		res.Errors = append(res.Errors, deleteErrorEntry{Key: o.Key, Code: e.Code, Message: e.Message})
	}
	return writeXML(rq.w, http.StatusOK, res)
}
