package cosserver

import (
	"encoding/xml"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/cosmount/cosmount/pkg/emulator/store"
)

// maxParts is the highest part number of a multipart upload.
const maxParts = 10000

type initiateResult struct {
	XMLName  xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ InitiateMultipartUploadResult"`
	Bucket   string   `xml:"Bucket"`
	Key      string   `xml:"Key"`
	UploadID string   `xml:"UploadId"`
}

func (s *Server) createMultipartUpload(rq *request) error {
	s.applyLifecycle(rq.bucket)
	u, err := s.storage.CreateMultipartUpload(rq.bucket, rq.key, requestMeta(rq.r.Header))
	if err != nil {
		return err
	}
	return writeXML(rq.w, http.StatusOK, initiateResult{Bucket: rq.bucket, Key: rq.key, UploadID: u.ID})
}

type copyPartResult struct {
	XMLName      xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ CopyPartResult"`
	LastModified string   `xml:"LastModified"`
	ETag         string   `xml:"ETag"`
}

// uploadPart serves UploadPart and UploadPartCopy.
func (s *Server) uploadPart(rq *request) error {
	number, err := strconv.Atoi(rq.query.Get("partNumber"))
	if err != nil || number < 1 || number > maxParts {
		return errInvalidArgument("Part number must be an integer between 1 and 10000, inclusive")
	}
	uploadID := rq.query.Get("uploadId")
	if rq.op == opUploadPart {
		return storeBody(rq, func() (string, error) {
			part, err := s.storage.UploadPart(rq.bucket, rq.key, uploadID, number, rq.body)
			return part.ETag, err
		})
	}
	src := rq.copySource
	srcObj, err := s.storage.HeadObject(src.bucket, src.key)
	if err != nil {
		return err
	}
	if readConditions(rq.r.Header, "X-Amz-Copy-Source-", srcObj) != 0 {
		return errPreconditionFailed()
	}
	offset, length := int64(0), int64(-1)
	if v := rq.r.Header.Get("X-Amz-Copy-Source-Range"); v != "" {
		offset, length, err = parseCopyRange(v, srcObj.Size)
		if err != nil {
			return err
		}
	}
	if length > maxPutSize || length < 0 && srcObj.Size > maxPutSize {
		return errEntityTooLarge()
	}
	part, err := s.storage.UploadPartCopy(rq.bucket, rq.key, uploadID, number, src.bucket, src.key, offset, length)
	if err != nil {
		return err
	}
	return writeXML(rq.w, http.StatusOK, copyPartResult{LastModified: isoTime(part.LastModified), ETag: `"` + part.ETag + `"`})
}

// parseCopyRange reads x-amz-copy-source-range "bytes=first-last" (both required).
func parseCopyRange(v string, size int64) (offset, length int64, err error) {
	bad := errInvalidArgument("The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy")
	r, ok := strings.CutPrefix(v, "bytes=")
	if !ok {
		return 0, 0, bad
	}
	a, b, ok := strings.Cut(r, "-")
	if !ok {
		return 0, 0, bad
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || first < 0 || last < first {
		return 0, 0, bad
	}
	if last >= size {
		return 0, 0, &apiError{Status: http.StatusRequestedRangeNotSatisfiable, Code: "InvalidRange",
			Message: "The requested range is not satisfiable"}
	}
	return first, last - first + 1, nil
}

type completeRequest struct {
	Parts []struct {
		PartNumber int    `xml:"PartNumber"`
		ETag       string `xml:"ETag"`
	} `xml:"Part"`
}

type completeResult struct {
	XMLName  xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ CompleteMultipartUploadResult"`
	Location string   `xml:"Location"`
	Bucket   string   `xml:"Bucket"`
	Key      string   `xml:"Key"`
	ETag     string   `xml:"ETag"`
}

// maxCompleteBody bounds a CompleteMultipartUpload document (10,000 parts).
const maxCompleteBody = 4 << 20

func (s *Server) completeMultipartUpload(rq *request) error {
	raw, err := io.ReadAll(io.LimitReader(rq.body, maxCompleteBody+1))
	if f := rq.body.failure(); f != nil {
		return f
	}
	if err != nil {
		return err
	}
	var req completeRequest
	if len(raw) > maxCompleteBody || xml.Unmarshal(raw, &req) != nil || len(req.Parts) == 0 || len(req.Parts) > maxParts {
		return errMalformedXML()
	}
	parts := make([]store.Part, len(req.Parts))
	for i, p := range req.Parts {
		parts[i] = store.Part{Number: p.PartNumber, ETag: strings.Trim(strings.TrimSpace(p.ETag), `"`)}
	}
	obj, err := s.storage.CompleteMultipartUpload(rq.bucket, rq.key, rq.query.Get("uploadId"), parts, writePrecondition(rq.r.Header))
	if err != nil {
		return err
	}
	loc := "http://" + rq.r.Host + resource(rq.bucket, uriEncode(rq.key, false))
	rq.w.Header().Set("ETag", `"`+obj.ETag+`"`)
	return writeXML(rq.w, http.StatusOK, completeResult{Location: loc, Bucket: rq.bucket, Key: rq.key, ETag: `"` + obj.ETag + `"`})
}

func (s *Server) abortMultipartUpload(rq *request) error {
	if err := s.storage.AbortMultipartUpload(rq.bucket, rq.key, rq.query.Get("uploadId")); err != nil {
		return err
	}
	rq.w.WriteHeader(http.StatusNoContent)
	return nil
}

type partEntry struct {
	PartNumber   int    `xml:"PartNumber"`
	LastModified string `xml:"LastModified"`
	ETag         string `xml:"ETag"`
	Size         int64  `xml:"Size"`
}

type listPartsResult struct {
	XMLName              xml.Name    `xml:"http://s3.amazonaws.com/doc/2006-03-01/ ListPartsResult"`
	Bucket               string      `xml:"Bucket"`
	Key                  string      `xml:"Key"`
	UploadID             string      `xml:"UploadId"`
	StorageClass         string      `xml:"StorageClass"`
	PartNumberMarker     int         `xml:"PartNumberMarker"`
	NextPartNumberMarker int         `xml:"NextPartNumberMarker"`
	MaxParts             int         `xml:"MaxParts"`
	IsTruncated          bool        `xml:"IsTruncated"`
	Parts                []partEntry `xml:"Part"`
}

func (s *Server) listParts(rq *request) error {
	maxP, e := intParam(rq.query.Get("max-parts"), maxListKeys)
	if e != nil {
		return e
	}
	marker, e := intParam(rq.query.Get("part-number-marker"), 0)
	if e != nil {
		return e
	}
	parts, err := s.storage.ListParts(rq.bucket, rq.key, rq.query.Get("uploadId"))
	if err != nil {
		return err
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].Number < parts[j].Number })
	res := listPartsResult{Bucket: rq.bucket, Key: rq.key, UploadID: rq.query.Get("uploadId"), StorageClass: "STANDARD",
		PartNumberMarker: marker, MaxParts: maxP}
	for _, p := range parts {
		if p.Number <= marker {
			continue
		}
		if len(res.Parts) == maxP {
			res.IsTruncated = true
			break
		}
		res.Parts = append(res.Parts, partEntry{PartNumber: p.Number, LastModified: isoTime(p.LastModified), ETag: `"` + p.ETag + `"`, Size: p.Size})
		res.NextPartNumberMarker = p.Number
	}
	return writeXML(rq.w, http.StatusOK, res)
}

type uploadEntry struct {
	Key          string `xml:"Key"`
	UploadID     string `xml:"UploadId"`
	Initiated    string `xml:"Initiated"`
	StorageClass string `xml:"StorageClass"`
}

type listUploadsResult struct {
	XMLName            xml.Name       `xml:"http://s3.amazonaws.com/doc/2006-03-01/ ListMultipartUploadsResult"`
	Bucket             string         `xml:"Bucket"`
	KeyMarker          string         `xml:"KeyMarker"`
	UploadIDMarker     string         `xml:"UploadIdMarker"`
	NextKeyMarker      string         `xml:"NextKeyMarker,omitempty"`
	NextUploadIDMarker string         `xml:"NextUploadIdMarker,omitempty"`
	Prefix             string         `xml:"Prefix"`
	MaxUploads         int            `xml:"MaxUploads"`
	IsTruncated        bool           `xml:"IsTruncated"`
	Uploads            []uploadEntry  `xml:"Upload"`
	CommonPrefixes     []commonPrefix `xml:"CommonPrefixes,omitempty"`
}

func (s *Server) listMultipartUploads(rq *request) error {
	maxU, e := intParam(rq.query.Get("max-uploads"), maxListKeys)
	if e != nil {
		return e
	}
	prefix, keyMarker, idMarker := rq.query.Get("prefix"), rq.query.Get("key-marker"), rq.query.Get("upload-id-marker")
	s.applyLifecycle(rq.bucket)
	ups, err := s.storage.ListMultipartUploads(rq.bucket)
	if err != nil {
		return err
	}
	sort.Slice(ups, func(i, j int) bool {
		if ups[i].Key != ups[j].Key {
			return ups[i].Key < ups[j].Key
		}
		return ups[i].ID < ups[j].ID
	})
	res := listUploadsResult{Bucket: rq.bucket, KeyMarker: keyMarker, UploadIDMarker: idMarker, Prefix: prefix, MaxUploads: maxU}
	for _, u := range ups {
		if !strings.HasPrefix(u.Key, prefix) || u.Key < keyMarker || u.Key == keyMarker && (idMarker == "" || u.ID <= idMarker) {
			continue
		}
		if len(res.Uploads) == maxU {
			res.IsTruncated = true
			break
		}
		res.Uploads = append(res.Uploads, uploadEntry{Key: u.Key, UploadID: u.ID, Initiated: isoTime(u.Initiated), StorageClass: "STANDARD"})
		res.NextKeyMarker, res.NextUploadIDMarker = u.Key, u.ID
	}
	return writeXML(rq.w, http.StatusOK, res)
}

// intParam parses a non-negative integer query parameter, capped at def when def > 0.
func intParam(v string, def int) (int, *apiError) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, errInvalidArgument("Argument must be a non-negative integer")
	}
	if def > 0 {
		n = min(n, def)
	}
	return n, nil
}
