package cos

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzParseHMAC: an HMAC credentials file. A result has both halves, free
// of white space; an error never quotes the content.
func FuzzParseHMAC(f *testing.F) {
	f.Add([]byte("AKID:SECRET\n"))
	f.Add([]byte("AKID\nSECRET\n"))
	f.Add([]byte("a:b:c"))
	f.Add([]byte(":secret"))
	f.Add([]byte("  \t\n"))
	f.Add([]byte("id secret extra"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHMAC(b)
		if err != nil {
			// The message is one of a few fixed texts: nothing of the
			// content can be in it.
			if msg := err.Error(); msg != errHMACFormat.Error() && msg != errHMACEmpty.Error() {
				t.Fatalf("error %q is not one of the fixed messages", msg)
			}
			return
		}
		if h.AccessKeyID == "" || h.SecretAccessKey == "" || strings.ContainsAny(h.AccessKeyID+h.SecretAccessKey, " \t\r\n") {
			t.Fatalf("parsed %q into %q / %q", b, h.AccessKeyID, h.SecretAccessKey)
		}
	})
}

// FuzzParseUploadJournal: a journal left by a crashed process may be torn
// or damaged anywhere; reading it never panics and yields only complete
// uploads, each once.
func FuzzParseUploadJournal(f *testing.F) {
	f.Add([]byte(`{"op":"start","bucket":"b","key":"k","id":"1"}` + "\n" + `{"op":"end","id":"1"}` + "\n"))
	f.Add([]byte(`{"op":"start","bucket":"b","key":"k","id":"1"}` + "\n" + `{"op":"start","bucket":"b","key":"k","id":"1"}`))
	f.Add([]byte(`{"op":"start","bucket":"b","key":"k","i`))
	f.Add([]byte("\n\n{}\n[1,2]\nnull\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ups, n, err := ParseUploadJournal(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("reading from memory failed: %v", err)
		}
		if n < len(ups) {
			t.Fatalf("%d uploads from %d records", len(ups), n)
		}
		seen := map[string]bool{}
		for _, u := range ups {
			if u.Bucket == "" || u.Key == "" || u.UploadID == "" || seen[u.UploadID] {
				t.Fatalf("bad or repeated upload %+v", u)
			}
			seen[u.UploadID] = true
		}
	})
}
