package cosserver

import (
	"bytes"
	"crypto/md5"
	"encoding/xml"
	"fmt"
	"strings"
	"testing"
)

func (e *env) initiate(key string, hdr ...string) string {
	e.t.Helper()
	r := e.bearer(tokManager, "POST", "/bkt/"+key+"?uploads", nil, hdr...)
	if r.status != 200 {
		e.t.Fatalf("initiate: %d %s", r.status, r.body)
	}
	var res struct {
		Bucket, Key string
		UploadID    string `xml:"UploadId"`
	}
	if err := xml.Unmarshal(r.body, &res); err != nil || res.UploadID == "" || res.Key != key || res.Bucket != "bkt" {
		e.t.Fatalf("initiate result %s (%v)", r.body, err)
	}
	return res.UploadID
}

func completeBody(parts ...string) []byte {
	var b bytes.Buffer
	b.WriteString("<CompleteMultipartUpload>")
	for i := 0; i+1 < len(parts); i += 2 {
		fmt.Fprintf(&b, "<Part><PartNumber>%s</PartNumber><ETag>%s</ETag></Part>", parts[i], parts[i+1])
	}
	b.WriteString("</CompleteMultipartUpload>")
	return b.Bytes()
}

func TestMultipartUpload(t *testing.T) {
	e := newEnv(t)
	id := e.initiate("big", "Content-Type", "video/mp4", "x-amz-meta-mode", "420")
	p1 := bytes.Repeat([]byte("a"), testPartSize)
	p2 := bytes.Repeat([]byte("b"), testPartSize+5)
	p3 := []byte("tail")
	var etags []string
	for i, p := range [][]byte{p1, p2, p3} {
		r := e.bearer(tokManager, "PUT", fmt.Sprintf("/bkt/big?partNumber=%d&uploadId=%s", i+1, id), p)
		sum := md5.Sum(p)
		if r.status != 200 || r.header.Get("ETag") != fmt.Sprintf(`"%x"`, sum) {
			t.Fatalf("part %d: %d %q", i+1, r.status, r.header.Get("ETag"))
		}
		etags = append(etags, r.header.Get("ETag"))
	}
	lp := e.bearer(tokManager, "GET", "/bkt/big?uploadId="+id+"&max-parts=2", nil)
	var parts struct {
		IsTruncated          bool
		NextPartNumberMarker int
		Parts                []struct {
			PartNumber int
			ETag       string
			Size       int64
		} `xml:"Part"`
	}
	if err := xml.Unmarshal(lp.body, &parts); err != nil || len(parts.Parts) != 2 || !parts.IsTruncated ||
		parts.NextPartNumberMarker != 2 || parts.Parts[1].Size != int64(len(p2)) || parts.Parts[0].ETag != etags[0] {
		t.Errorf("list parts: %s (%v)", lp.body, err)
	}
	lp = e.bearer(tokManager, "GET", "/bkt/big?uploadId="+id+"&part-number-marker=2", nil)
	if !strings.Contains(string(lp.body), "<PartNumber>3</PartNumber>") || strings.Contains(string(lp.body), "<PartNumber>2</PartNumber>") {
		t.Errorf("list parts after marker: %s", lp.body)
	}
	lu := e.bearer(tokReader, "GET", "/bkt?uploads", nil)
	if !strings.Contains(string(lu.body), "<UploadId>"+id+"</UploadId>") || !strings.Contains(string(lu.body), "<Key>big</Key>") {
		t.Errorf("list uploads: %s", lu.body)
	}
	r := e.bearer(tokManager, "POST", "/bkt/big?uploadId="+id, completeBody("1", etags[0], "2", etags[1], "3", etags[2]))
	expect(t, "complete", r, 200, "")
	var done struct {
		Location, Bucket, Key, ETag string
	}
	if err := xml.Unmarshal(r.body, &done); err != nil || !strings.HasSuffix(done.ETag, `-3"`) || done.Key != "big" || done.Location == "" {
		t.Errorf("complete result %s (%v)", r.body, err)
	}
	g := e.bearer(tokReader, "GET", "/bkt/big", nil)
	want := append(append(append([]byte{}, p1...), p2...), p3...)
	if !bytes.Equal(g.body, want) || g.header.Get("ETag") != done.ETag || g.header.Get("Content-Type") != "video/mp4" ||
		g.header.Get("X-Amz-Meta-Mode") != "420" {
		t.Errorf("completed object: %d bytes, headers %v", len(g.body), g.header)
	}
	expect(t, "upload gone", e.bearer(tokManager, "GET", "/bkt/big?uploadId="+id, nil), 404, "NoSuchUpload")
}

func TestMultipartErrors(t *testing.T) {
	e := newEnv(t)
	e.put("source", bytes.Repeat([]byte("s"), 3*testPartSize))
	small := []byte("small")
	big := bytes.Repeat([]byte("x"), testPartSize)
	id := e.initiate("k")
	etag := func(b []byte) string { return fmt.Sprintf(`"%x"`, md5.Sum(b)) }
	put := func(n int, b []byte) {
		t.Helper()
		if r := e.bearer(tokManager, "PUT", fmt.Sprintf("/bkt/k?partNumber=%d&uploadId=%s", n, id), b); r.status != 200 {
			t.Fatalf("part %d: %d %s", n, r.status, r.body)
		}
	}
	put(1, small)
	put(2, big)
	tests := []struct {
		name, method, path string
		body               []byte
		hdr                []string
		status             int
		code               string
	}{
		{"part number zero", "PUT", "/bkt/k?partNumber=0&uploadId=" + id, small, nil, 400, "InvalidArgument"},
		{"part number too big", "PUT", "/bkt/k?partNumber=10001&uploadId=" + id, small, nil, 400, "InvalidArgument"},
		{"unknown upload part", "PUT", "/bkt/k?partNumber=1&uploadId=nope", small, nil, 404, "NoSuchUpload"},
		{"too small", "POST", "/bkt/k?uploadId=" + id, completeBody("1", etag(small), "2", etag(big)), nil, 400, "EntityTooSmall"},
		{"wrong order", "POST", "/bkt/k?uploadId=" + id, completeBody("2", etag(big), "1", etag(small)), nil, 400, "InvalidPartOrder"},
		{"wrong etag", "POST", "/bkt/k?uploadId=" + id, completeBody("2", `"abc"`), nil, 400, "InvalidPart"},
		{"missing part", "POST", "/bkt/k?uploadId=" + id, completeBody("7", etag(big)), nil, 400, "InvalidPart"},
		{"no parts", "POST", "/bkt/k?uploadId=" + id, completeBody(), nil, 400, "MalformedXML"},
		{"garbage", "POST", "/bkt/k?uploadId=" + id, []byte("<Complete"), nil, 400, "MalformedXML"},
		{"unknown upload complete", "POST", "/bkt/k?uploadId=nope", completeBody("2", etag(big)), nil, 404, "NoSuchUpload"},
		{"copy range malformed", "PUT", "/bkt/k?partNumber=3&uploadId=" + id, nil,
			[]string{"x-amz-copy-source", "/bkt/source", "x-amz-copy-source-range", "bytes=5-"}, 400, "InvalidArgument"},
		{"copy range beyond source", "PUT", "/bkt/k?partNumber=3&uploadId=" + id, nil,
			[]string{"x-amz-copy-source", "/bkt/source", "x-amz-copy-source-range", fmt.Sprintf("bytes=0-%d", 3*testPartSize)}, 416, "InvalidRange"},
		{"copy missing source", "PUT", "/bkt/k?partNumber=3&uploadId=" + id, nil, []string{"x-amz-copy-source", "/bkt/none"}, 404, "NoSuchKey"},
		{"reader cannot upload", "PUT", "/bkt/k?partNumber=4&uploadId=" + id, small, nil, 403, "AccessDenied"},
		{"abort unknown", "DELETE", "/bkt/k?uploadId=nope", nil, nil, 404, "NoSuchUpload"},
	}
	for _, tc := range tests {
		tok := tokManager
		if strings.HasPrefix(tc.name, "reader") {
			tok = tokReader
		}
		expect(t, tc.name, e.bearer(tok, tc.method, tc.path, tc.body, tc.hdr...), tc.status, tc.code)
	}
	// Replacing part 1 with a big one and copying a range as part 3 completes.
	put(1, big)
	r := e.bearer(tokManager, "PUT", "/bkt/k?partNumber=3&uploadId="+id, nil,
		"x-amz-copy-source", "/bkt/source", "x-amz-copy-source-range", "bytes=10-19")
	expect(t, "upload part copy", r, 200, "")
	var cp struct{ ETag, LastModified string }
	if err := xml.Unmarshal(r.body, &cp); err != nil || cp.ETag != etag([]byte("ssssssssss")) || cp.LastModified == "" {
		t.Fatalf("copy part result %s (%v)", r.body, err)
	}
	r = e.bearer(tokManager, "POST", "/bkt/k?uploadId="+id, completeBody("1", etag(big), "2", etag(big), "3", cp.ETag),
		"If-None-Match", "*")
	expect(t, "complete with copy part", r, 200, "")
	if h := e.bearer(tokManager, "HEAD", "/bkt/k", nil); h.header.Get("Content-Length") != fmt.Sprint(2*testPartSize+10) {
		t.Errorf("completed size %s", h.header.Get("Content-Length"))
	}
	id2 := e.initiate("k")
	put2 := e.bearer(tokManager, "PUT", "/bkt/k?partNumber=1&uploadId="+id2, small)
	r = e.bearer(tokManager, "POST", "/bkt/k?uploadId="+id2, completeBody("1", put2.header.Get("ETag")), "If-None-Match", "*")
	expect(t, "complete refused by precondition", r, 412, "PreconditionFailed")
	expect(t, "abort", e.bearer(tokManager, "DELETE", "/bkt/k?uploadId="+id2, nil), 204, "")
	expect(t, "aborted", e.bearer(tokManager, "GET", "/bkt/k?uploadId="+id2, nil), 404, "NoSuchUpload")
}
