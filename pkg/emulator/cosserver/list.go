package cosserver

import (
	"encoding/base64"
	"encoding/xml"
	"net/http"
	"strconv"
	"strings"

	"github.com/cosmount/cosmount/pkg/emulator/store"
)

// maxListKeys is the most entries one listing page returns.
const maxListKeys = 1000

type listEntry struct {
	Key          string `xml:"Key"`
	LastModified string `xml:"LastModified"`
	ETag         string `xml:"ETag"`
	Size         int64  `xml:"Size"`
	Owner        *owner `xml:"Owner,omitempty"`
	StorageClass string `xml:"StorageClass"`
}

type commonPrefix struct {
	Prefix string `xml:"Prefix"`
}

// listBucketResult serves both list versions; the fields of the other
// version stay empty and are omitted.
type listBucketResult struct {
	XMLName               xml.Name       `xml:"http://s3.amazonaws.com/doc/2006-03-01/ ListBucketResult"`
	Name                  string         `xml:"Name"`
	Prefix                string         `xml:"Prefix"`
	Marker                *string        `xml:"Marker"`
	NextMarker            string         `xml:"NextMarker,omitempty"`
	StartAfter            string         `xml:"StartAfter,omitempty"`
	ContinuationToken     string         `xml:"ContinuationToken,omitempty"`
	NextContinuationToken string         `xml:"NextContinuationToken,omitempty"`
	KeyCount              *int           `xml:"KeyCount"`
	MaxKeys               int            `xml:"MaxKeys"`
	Delimiter             string         `xml:"Delimiter,omitempty"`
	EncodingType          string         `xml:"EncodingType,omitempty"`
	IsTruncated           bool           `xml:"IsTruncated"`
	Contents              []listEntry    `xml:"Contents"`
	CommonPrefixes        []commonPrefix `xml:"CommonPrefixes"`
}

// listArgs are the parameters both list versions share.
type listArgs struct {
	prefix, delimiter, encoding string
	maxKeys                     int
}

func parseListArgs(q map[string][]string) (listArgs, *apiError) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	a := listArgs{prefix: get("prefix"), delimiter: get("delimiter"), encoding: get("encoding-type"), maxKeys: maxListKeys}
	if a.encoding != "" && a.encoding != "url" {
		return a, errInvalidArgument("Invalid Encoding Method specified in Request")
	}
	if v := get("max-keys"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return a, errInvalidArgument("Provided max-keys not an integer or within integer range")
		}
		a.maxKeys = min(n, maxListKeys)
	}
	return a, nil
}

// list runs one page; with max-keys=0 it answers an empty, untruncated page.
func (s *Server) list(bucket string, a listArgs, startAfter string) (store.ListResult, error) {
	if a.maxKeys == 0 {
		return store.ListResult{}, nil
	}
	return s.storage.ListObjects(bucket, store.ListParams{Prefix: a.prefix, Delimiter: a.delimiter, StartAfter: startAfter, MaxKeys: a.maxKeys})
}

// fill copies a store page into the result, URL-encoding names if asked.
func (a listArgs) fill(res *listBucketResult, page store.ListResult, withOwner *owner) {
	enc := func(s string) string {
		if a.encoding == "url" {
			return urlEncodeName(s)
		}
		return s
	}
	res.Prefix, res.Delimiter, res.EncodingType, res.MaxKeys = enc(a.prefix), enc(a.delimiter), a.encoding, a.maxKeys
	res.IsTruncated = page.IsTruncated
	for _, o := range page.Objects {
		res.Contents = append(res.Contents, listEntry{Key: enc(o.Key), LastModified: isoTime(o.LastModified),
			ETag: `"` + o.ETag + `"`, Size: o.Size, Owner: withOwner, StorageClass: "STANDARD"})
	}
	for _, p := range page.CommonPrefixes {
		res.CommonPrefixes = append(res.CommonPrefixes, commonPrefix{Prefix: enc(p)})
	}
}

func (s *Server) listObjectsV1(rq *request) error {
	a, e := parseListArgs(rq.query)
	if e != nil {
		return e
	}
	marker := rq.query.Get("marker")
	page, err := s.list(rq.bucket, a, marker)
	if err != nil {
		return err
	}
	res := listBucketResult{Name: rq.bucket, Marker: &marker}
	a.fill(&res, page, bucketOwner(rq.bucketInfo))
	if a.encoding == "url" {
		*res.Marker = urlEncodeName(marker)
	}
	if page.IsTruncated {
		// Always sent (S3 only sends it with a delimiter) so that clients
		// resume after a common prefix rather than inside it.
		res.NextMarker = page.NextStartAfter
		if a.encoding == "url" {
			res.NextMarker = urlEncodeName(res.NextMarker)
		}
	}
	return writeXML(rq.w, http.StatusOK, res)
}

func (s *Server) listObjectsV2(rq *request) error {
	a, e := parseListArgs(rq.query)
	if e != nil {
		return e
	}
	startAfter := rq.query.Get("start-after")
	token := rq.query.Get("continuation-token")
	from := startAfter
	if _, ok := rq.query["continuation-token"]; ok {
		var err error
		if from, err = decodeToken(token); err != nil {
			return errInvalidArgument("The continuation token provided is incorrect")
		}
	}
	page, err := s.list(rq.bucket, a, from)
	if err != nil {
		return err
	}
	var o *owner
	if rq.query.Get("fetch-owner") == "true" {
		o = bucketOwner(rq.bucketInfo)
	}
	n := len(page.Objects) + len(page.CommonPrefixes)
	res := listBucketResult{Name: rq.bucket, ContinuationToken: token, KeyCount: &n, StartAfter: startAfter}
	a.fill(&res, page, o)
	if a.encoding == "url" {
		res.StartAfter = urlEncodeName(startAfter)
	}
	if page.IsTruncated {
		res.NextContinuationToken = encodeToken(page.NextStartAfter)
	}
	return writeXML(rq.w, http.StatusOK, res)
}

// Continuation tokens are opaque to clients: the key to resume after, encoded.
func encodeToken(startAfter string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("v1:" + startAfter))
}

func decodeToken(tok string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return "", err
	}
	s, ok := strings.CutPrefix(string(b), "v1:")
	if !ok {
		return "", strconv.ErrSyntax
	}
	return s, nil
}

func bucketOwner(b *store.Bucket) *owner {
	id := bucketInstance(b)
	return &owner{ID: id, DisplayName: id}
}

// urlEncodeName is S3's encoding-type=url: RFC 3986 percent-encoding that
// keeps '/' readable, spaces as %20 (decoders of every client accept it).
func urlEncodeName(s string) string { return uriEncode(s, false) }
