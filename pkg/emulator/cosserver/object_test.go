package cosserver

import (
	"bytes"
	"crypto/md5"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"hash/crc32"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestPutGetHeadMetadata(t *testing.T) {
	e := newEnv(t)
	body := []byte("hello, world")
	sum := md5.Sum(body)
	p := e.put("dir/hello.txt", body, "Content-Type", "text/plain", "X-Amz-Meta-Mode", "33188", "x-amz-meta-MTime", "1700000000",
		"Content-MD5", base64.StdEncoding.EncodeToString(sum[:]))
	etag := fmt.Sprintf(`"%x"`, sum)
	if p.header.Get("ETag") != etag {
		t.Fatalf("put etag %q, want %q", p.header.Get("ETag"), etag)
	}
	for _, method := range []string{"GET", "HEAD"} {
		r := e.bearer(tokReader, method, "/bkt/dir/hello.txt", nil)
		h := r.header
		if r.status != 200 || h.Get("ETag") != etag || h.Get("Content-Type") != "text/plain" || h.Get("Content-Length") != "12" ||
			h.Get("X-Amz-Meta-Mode") != "33188" || h.Get("X-Amz-Meta-Mtime") != "1700000000" || h.Get("Accept-Ranges") != "bytes" {
			t.Errorf("%s: %d headers %v", method, r.status, h)
		}
		if _, err := time.Parse(http.TimeFormat, h.Get("Last-Modified")); err != nil || !strings.HasSuffix(h.Get("Last-Modified"), "GMT") {
			t.Errorf("%s: Last-Modified %q", method, h.Get("Last-Modified"))
		}
		if method == "GET" && string(r.body) != string(body) {
			t.Errorf("GET body %q", r.body)
		}
		if method == "HEAD" && len(r.body) != 0 {
			t.Errorf("HEAD body %q", r.body)
		}
	}
	bad := md5.Sum([]byte("other"))
	r := e.bearer(tokManager, "PUT", "/bkt/dir/hello.txt", []byte("replacement"), "Content-MD5", base64.StdEncoding.EncodeToString(bad[:]))
	expect(t, "bad md5", r, 400, "BadDigest")
	expect(t, "invalid md5", e.bearer(tokManager, "PUT", "/bkt/x", []byte("y"), "Content-MD5", "!!"), 400, "InvalidDigest")
	crc := crc32.ChecksumIEEE([]byte("crc body"))
	good := base64.StdEncoding.EncodeToString([]byte{byte(crc >> 24), byte(crc >> 16), byte(crc >> 8), byte(crc)})
	expect(t, "good crc32", e.bearer(tokManager, "PUT", "/bkt/crc", []byte("crc body"), "x-amz-checksum-crc32", good), 200, "")
	expect(t, "bad crc32", e.bearer(tokManager, "PUT", "/bkt/crc", []byte("changed!"), "x-amz-checksum-crc32", good), 400, "BadDigest")
	if g := e.bearer(tokReader, "GET", "/bkt/dir/hello.txt", nil); string(g.body) != string(body) {
		t.Errorf("object changed by a refused PUT: %q", g.body)
	}
	expect(t, "empty object", e.bearer(tokManager, "PUT", "/bkt/empty", nil), 200, "")
	if g := e.bearer(tokReader, "GET", "/bkt/empty", nil); g.status != 200 || len(g.body) != 0 || g.header.Get("Content-Type") != defaultContentType {
		t.Errorf("empty object: %d %q %v", g.status, g.body, g.header)
	}
}

func TestPutPreconditions(t *testing.T) {
	e := newEnv(t)
	first := e.put("k", []byte("one"))
	etag := first.header.Get("ETag")
	tests := []struct {
		name   string
		key    string
		hdr    []string
		status int
		code   string
	}{
		{"if-none-match * on existing", "k", []string{"If-None-Match", "*"}, 412, "PreconditionFailed"},
		{"if-none-match * on new", "fresh", []string{"If-None-Match", "*"}, 200, ""},
		{"if-match wrong", "k", []string{"If-Match", `"0123"`}, 412, "PreconditionFailed"},
		{"if-match on missing", "absent", []string{"If-Match", etag}, 404, "NoSuchKey"},
		{"if-match right", "k", []string{"If-Match", etag}, 200, ""},
	}
	for _, tc := range tests {
		expect(t, tc.name, e.bearer(tokManager, "PUT", "/bkt/"+tc.key, []byte("two"), tc.hdr...), tc.status, tc.code)
	}
}

func TestGetRanges(t *testing.T) {
	e := newEnv(t)
	e.put("r", []byte("0123456789"))
	e.put("empty", nil)
	tests := []struct {
		name, key, rng string
		status         int
		body, cr       string
	}{
		{"first bytes", "r", "bytes=0-3", 206, "0123", "bytes 0-3/10"},
		{"middle", "r", "bytes=4-6", 206, "456", "bytes 4-6/10"},
		{"open end", "r", "bytes=7-", 206, "789", "bytes 7-9/10"},
		{"suffix", "r", "bytes=-2", 206, "89", "bytes 8-9/10"},
		{"suffix larger than object", "r", "bytes=-20", 206, "0123456789", "bytes 0-9/10"},
		{"end clamped", "r", "bytes=8-100", 206, "89", "bytes 8-9/10"},
		{"start beyond end", "r", "bytes=10-", 416, "", "bytes */10"},
		{"zero suffix", "r", "bytes=-0", 416, "", "bytes */10"},
		{"empty object", "empty", "bytes=0-", 416, "", "bytes */0"},
		{"malformed ignored", "r", "bytes=5-2", 200, "0123456789", ""},
		{"multiple ranges ignored", "r", "bytes=0-1,3-4", 200, "0123456789", ""},
		{"other unit ignored", "r", "items=0-1", 200, "0123456789", ""},
	}
	for _, tc := range tests {
		r := e.bearer(tokReader, "GET", "/bkt/"+tc.key, nil, "Range", tc.rng)
		if r.status != tc.status || r.header.Get("Content-Range") != tc.cr {
			t.Errorf("%s: %d Content-Range %q, want %d %q", tc.name, r.status, r.header.Get("Content-Range"), tc.status, tc.cr)
			continue
		}
		if tc.status == 416 {
			expect(t, tc.name, r, 416, "InvalidRange")
		} else if string(r.body) != tc.body {
			t.Errorf("%s: body %q, want %q", tc.name, r.body, tc.body)
		}
	}
}

func TestGetConditionals(t *testing.T) {
	e := newEnv(t)
	p := e.put("c", []byte("conditional"))
	etag := p.header.Get("ETag")
	h := e.bearer(tokReader, "HEAD", "/bkt/c", nil)
	lm, err := time.Parse(http.TimeFormat, h.header.Get("Last-Modified"))
	if err != nil {
		t.Fatal(err)
	}
	at := func(d time.Duration) string { return lm.Add(d).Format(http.TimeFormat) }
	tests := []struct {
		name   string
		hdr    []string
		status int
	}{
		{"if-match same", []string{"If-Match", etag}, 200},
		{"if-match star", []string{"If-Match", "*"}, 200},
		{"if-match list", []string{"If-Match", `"nope", ` + etag}, 200},
		{"if-match other", []string{"If-Match", `"nope"`}, 412},
		{"if-none-match same", []string{"If-None-Match", etag}, 304},
		{"if-none-match other", []string{"If-None-Match", `"nope"`}, 200},
		{"if-modified-since equal", []string{"If-Modified-Since", at(0)}, 304},
		{"if-modified-since later", []string{"If-Modified-Since", at(time.Hour)}, 304},
		{"if-modified-since earlier", []string{"If-Modified-Since", at(-time.Hour)}, 200},
		{"if-unmodified-since equal", []string{"If-Unmodified-Since", at(0)}, 200},
		{"if-unmodified-since earlier", []string{"If-Unmodified-Since", at(-time.Hour)}, 412},
		{"if-match wins over if-unmodified-since", []string{"If-Match", etag, "If-Unmodified-Since", at(-time.Hour)}, 200},
		{"if-none-match wins over if-modified-since", []string{"If-None-Match", `"nope"`, "If-Modified-Since", at(time.Hour)}, 200},
		{"if-none-match match with old ims", []string{"If-None-Match", etag, "If-Modified-Since", at(-time.Hour)}, 304},
		{"412 before 304", []string{"If-Match", `"nope"`, "If-None-Match", etag}, 412},
		{"invalid date ignored", []string{"If-Modified-Since", "yesterday"}, 200},
	}
	for _, tc := range tests {
		for _, method := range []string{"GET", "HEAD"} {
			r := e.bearer(tokReader, method, "/bkt/c", nil, tc.hdr...)
			if r.status != tc.status {
				t.Errorf("%s %s: %d, want %d", method, tc.name, r.status, tc.status)
				continue
			}
			switch {
			case tc.status == 304 && (len(r.body) != 0 || r.header.Get("ETag") != etag):
				t.Errorf("%s %s: 304 with body %q etag %q", method, tc.name, r.body, r.header.Get("ETag"))
			case tc.status == 412 && method == "GET":
				expect(t, tc.name, r, 412, "PreconditionFailed")
			case tc.status == 412 && len(r.body) != 0:
				t.Errorf("HEAD %s: body on error", tc.name)
			case tc.status == 200 && method == "GET" && string(r.body) != "conditional":
				t.Errorf("%s: body %q", tc.name, r.body)
			}
		}
	}
}

func TestCopyObject(t *testing.T) {
	e := newEnv(t)
	src := e.put("src/a b.txt", []byte("copy me"), "Content-Type", "text/plain", "x-amz-meta-mode", "1")
	etag := src.header.Get("ETag")
	if r := e.bearer(tokManager, "PUT", "/other", nil, "ibm-service-instance-id", otherInstance); r.status != 200 {
		t.Fatalf("create other: %d", r.status)
	}
	tests := []struct {
		name, dst string
		hdr       []string
		status    int
		code      string
		wantMeta  string
		wantType  string
	}{
		{"copy keeps metadata", "/bkt/dst1", []string{"x-amz-copy-source", "/bkt/src/a%20b.txt"}, 200, "", "1", "text/plain"},
		{"no leading slash", "/bkt/dst2", []string{"x-amz-copy-source", "bkt/src/a%20b.txt"}, 200, "", "1", "text/plain"},
		{"replace metadata", "/bkt/dst3", []string{"x-amz-copy-source", "/bkt/src/a%20b.txt", "x-amz-metadata-directive", "REPLACE",
			"x-amz-meta-mode", "2", "Content-Type", "image/png"}, 200, "", "2", "image/png"},
		{"across buckets", "/other/dst", []string{"x-amz-copy-source", "/bkt/src/a%20b.txt"}, 200, "", "1", "text/plain"},
		{"source if-match ok", "/bkt/dst4", []string{"x-amz-copy-source", "/bkt/src/a%20b.txt", "x-amz-copy-source-if-match", etag}, 200, "", "1", "text/plain"},
		{"source if-match fails", "/bkt/dst5", []string{"x-amz-copy-source", "/bkt/src/a%20b.txt", "x-amz-copy-source-if-match", `"nope"`}, 412, "PreconditionFailed", "", ""},
		{"source if-none-match fails", "/bkt/dst5", []string{"x-amz-copy-source", "/bkt/src/a%20b.txt", "x-amz-copy-source-if-none-match", etag}, 412, "PreconditionFailed", "", ""},
		{"missing source", "/bkt/dst6", []string{"x-amz-copy-source", "/bkt/none"}, 404, "NoSuchKey", "", ""},
		{"missing source bucket", "/bkt/dst6", []string{"x-amz-copy-source", "/nobucket/x"}, 404, "NoSuchBucket", "", ""},
		{"bad source", "/bkt/dst6", []string{"x-amz-copy-source", "/bkt"}, 400, "InvalidArgument", "", ""},
		{"bad directive", "/bkt/dst6", []string{"x-amz-copy-source", "/bkt/src/a%20b.txt", "x-amz-metadata-directive", "MERGE"}, 400, "InvalidArgument", "", ""},
		{"self copy without replace", "/bkt/src/a%20b.txt", []string{"x-amz-copy-source", "/bkt/src/a%20b.txt"}, 400, "InvalidRequest", "", ""},
		{"self copy with replace", "/bkt/src/a%20b.txt", []string{"x-amz-copy-source", "/bkt/src/a%20b.txt", "x-amz-metadata-directive", "REPLACE",
			"x-amz-meta-mode", "3"}, 200, "", "3", defaultContentType},
	}
	for _, tc := range tests {
		r := e.bearer(tokManager, "PUT", tc.dst, nil, tc.hdr...)
		expect(t, tc.name, r, tc.status, tc.code)
		if tc.status != 200 || r.status != 200 {
			continue
		}
		var res struct {
			ETag         string `xml:"ETag"`
			LastModified string `xml:"LastModified"`
		}
		if err := xml.Unmarshal(r.body, &res); err != nil || res.ETag != etag || res.LastModified == "" {
			t.Errorf("%s: result %s (%v)", tc.name, r.body, err)
		}
		g := e.bearer(tokManager, "GET", tc.dst, nil)
		if string(g.body) != "copy me" || g.header.Get("X-Amz-Meta-Mode") != tc.wantMeta || g.header.Get("Content-Type") != tc.wantType {
			t.Errorf("%s: copy reads %q meta %q type %q", tc.name, g.body, g.header.Get("X-Amz-Meta-Mode"), g.header.Get("Content-Type"))
		}
	}
	// Copying needs read access to the source as well as write access to the destination.
	expect(t, "object writer cannot read source", e.bearer(tokObjWrite, "PUT", "/bkt/dst7", nil, "x-amz-copy-source", "/bkt/dst1"), 403, "AccessDenied")
	expect(t, "bucket-scoped cannot read other bucket", e.bearer(tokBucket, "PUT", "/bkt/dst8", nil, "x-amz-copy-source", "/other/dst"), 403, "AccessDenied")
}

func deleteBody(quiet bool, keys ...string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `<Delete><Quiet>%v</Quiet>`, quiet)
	for _, k := range keys {
		b.WriteString("<Object><Key>")
		_ = xml.EscapeText(&b, []byte(k))
		b.WriteString("</Key></Object>")
	}
	b.WriteString("</Delete>")
	return b.Bytes()
}

func md5b64(b []byte) string {
	s := md5.Sum(b)
	return base64.StdEncoding.EncodeToString(s[:])
}

func TestDeleteObjects(t *testing.T) {
	e := newEnv(t)
	for _, k := range []string{"a", "b", "c&d"} {
		e.put(uriEncode(k, false), []byte(k))
	}
	body := deleteBody(false, "a", "c&d", "never-existed")
	expect(t, "no md5", e.bearer(tokManager, "POST", "/bkt?delete", body), 400, "InvalidRequest")
	expect(t, "wrong md5", e.bearer(tokManager, "POST", "/bkt?delete", body, "Content-MD5", md5b64([]byte("x"))), 400, "BadDigest")
	expect(t, "malformed", e.bearer(tokManager, "POST", "/bkt?delete", []byte("<Delete>"), "Content-MD5", md5b64([]byte("<Delete>"))), 400, "MalformedXML")
	expect(t, "reader denied", e.bearer(tokReader, "POST", "/bkt?delete", body, "Content-MD5", md5b64(body)), 403, "AccessDenied")
	r := e.bearer(tokManager, "POST", "/bkt?delete", body, "Content-MD5", md5b64(body))
	expect(t, "delete", r, 200, "")
	var res struct {
		Deleted []struct{ Key string } `xml:"Deleted"`
		Errors  []struct{ Key string } `xml:"Error"`
	}
	if err := xml.Unmarshal(r.body, &res); err != nil || len(res.Deleted) != 3 || len(res.Errors) != 0 {
		t.Fatalf("result %s (%v)", r.body, err)
	}
	expect(t, "a gone", e.bearer(tokManager, "HEAD", "/bkt/a", nil), 404, "")
	expect(t, "b kept", e.bearer(tokManager, "HEAD", "/bkt/b", nil), 200, "")
	quiet := deleteBody(true, "b")
	q := e.bearer(tokManager, "POST", "/bkt?delete", quiet, "Content-MD5", md5b64(quiet))
	if q.status != 200 || strings.Contains(string(q.body), "<Deleted>") {
		t.Errorf("quiet delete: %d %s", q.status, q.body)
	}
	crc := crc32.ChecksumIEEE(body)
	sum := base64.StdEncoding.EncodeToString([]byte{byte(crc >> 24), byte(crc >> 16), byte(crc >> 8), byte(crc)})
	expect(t, "crc32 instead of md5", e.bearer(tokManager, "POST", "/bkt?delete", body, "x-amz-checksum-crc32", sum), 200, "")
	many := make([]string, 1001)
	for i := range many {
		many[i] = fmt.Sprint(i)
	}
	big := deleteBody(true, many...)
	expect(t, "more than 1000 keys", e.bearer(tokManager, "POST", "/bkt?delete", big, "Content-MD5", md5b64(big)), 400, "MalformedXML")
}
