package cosserver

import (
	"strings"
	"testing"
)

// FuzzParseRange: a GET Range header against an object of size bytes. A
// range it serves lies inside the object and is not empty.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-99", "bytes=-10", "bytes=5-", "bytes=0-0,2-3", "bytes=9-1", "bytes=--1", "bytes=0-9223372036854775807", "items=0-1", " bytes= 3 - 4 "} {
		f.Add(s, int64(100))
	}
	f.Add("bytes=-5", int64(0))
	f.Fuzz(func(t *testing.T, spec string, size int64) {
		if size < 0 {
			return
		}
		start, length, ok, e := parseRange(spec, size)
		if e != nil {
			if ok || e.Status != 416 {
				t.Fatalf("%q of %d: error %+v with ok %v", spec, size, e, ok)
			}
			return
		}
		if !ok {
			if start != 0 || length != size {
				t.Fatalf("%q of %d: whole object as %d+%d", spec, size, start, length)
			}
			return
		}
		if start < 0 || length < 1 || start > size-length {
			t.Fatalf("%q of %d: range %d+%d outside the object", spec, size, start, length)
		}
	})
}

// FuzzParseCopyRange: x-amz-copy-source-range against a source of size bytes.
func FuzzParseCopyRange(f *testing.F) {
	for _, s := range []string{"bytes=0-99", "bytes=5-5", "bytes=-1", "bytes=3-2", "bytes=0-100", "0-1", "bytes=9223372036854775807-9223372036854775807"} {
		f.Add(s, int64(100))
	}
	f.Fuzz(func(t *testing.T, v string, size int64) {
		if size < 0 {
			return
		}
		off, n, err := parseCopyRange(v, size)
		if err != nil {
			return
		}
		if off < 0 || n < 1 || off > size-n {
			t.Fatalf("%q of %d: range %d+%d outside the source", v, size, off, n)
		}
	})
}

// FuzzParseSigV4: the Authorization header of a SigV4 request (without
// the algorithm), from anyone.
func FuzzParseSigV4(f *testing.F) {
	f.Add("Credential=AKID/20260101/us-south/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=abcdef")
	f.Add("Credential=a/b/c/d/e")
	f.Add("Credential=, SignedHeaders=, Signature=")
	f.Add(",,,")
	f.Add("Signature==x=y")
	f.Fuzz(func(t *testing.T, v string) {
		a, ok := parseSigV4(v)
		if !ok {
			if a != nil {
				t.Fatal("refused header with a result")
			}
			return
		}
		if a.accessKey == "" || a.signature == "" || len(a.signedHeaders) == 0 {
			t.Fatalf("%q accepted as %+v", v, a)
		}
	})
}

// FuzzParseLifecycle: a bucket lifecycle document from any client.
func FuzzParseLifecycle(f *testing.F) {
	f.Add([]byte(`<LifecycleConfiguration><Rule><ID>a</ID><Filter><Prefix>p/</Prefix></Filter><Status>Enabled</Status><AbortIncompleteMultipartUpload><DaysAfterInitiation>7</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule></LifecycleConfiguration>`))
	f.Add([]byte(`<LifecycleConfiguration><Rule><Prefix>x</Prefix><Status>Disabled</Status><Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>`))
	f.Add([]byte(`<LifecycleConfiguration><Rule><Status>Enabled</Status><Expiration><Days>-1</Days></Expiration></Rule></LifecycleConfiguration>`))
	f.Add([]byte(`<LifecycleConfiguration>`))
	f.Add([]byte(`<!DOCTYPE x [<!ENTITY a "aaaa">]><LifecycleConfiguration/>`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		lc, e := parseLifecycle(raw)
		if e != nil {
			if lc != nil || e.Status != 400 {
				t.Fatalf("refusal %+v with %+v", e, lc)
			}
			return
		}
		if len(lc.Rules) == 0 {
			t.Fatal("accepted a configuration without rules")
		}
		for _, r := range lc.Rules {
			if r.AbortIncompleteDays < 0 || r.ExpirationDays < 0 || r.AbortIncompleteDays == 0 && r.ExpirationDays == 0 {
				t.Fatalf("accepted rule %+v", r)
			}
		}
	})
}

// FuzzParseCopySource: x-amz-copy-source from any client.
func FuzzParseCopySource(f *testing.F) {
	for _, s := range []string{"/bkt/key", "bkt/a%2Fb", "bkt/k?versionId=1", "/bkt/", "%zz", "bkt/%00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		cs, e := parseCopySource(v)
		if e != nil {
			return
		}
		if cs.bucket == "" || cs.key == "" || strings.Contains(cs.bucket, "/") {
			t.Fatalf("%q parsed as %+v", v, cs)
		}
	})
}
