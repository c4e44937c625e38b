package cosserver

import (
	"encoding/xml"
	"strings"
	"testing"
)

// A Writer limited to a prefix (IBM's path/prefix/delimiter conditions)
// works inside it, is refused with IBM's AccessDenied everywhere else, and
// may still do the bucket-level calls a mount makes.
func TestPrefixScopedPolicy(t *testing.T) {
	e := newEnv(t)
	e.put("volumes/team-a/data/a.txt", []byte("a"))
	e.put("volumes/team-b/data/b.txt", []byte("b"))
	e.put("volumes/team-a-b/data/c.txt", []byte("c"))
	tests := []struct {
		name, method, path string
		body               []byte
		want               int
	}{
		{"head bucket", "HEAD", "/bkt", nil, 200},
		{"bucket location", "GET", "/bkt?location", nil, 200},
		{"list own prefix", "GET", "/bkt?list-type=2&prefix=volumes/team-a/data/&delimiter=/", nil, 200},
		{"list own prefix without delimiter", "GET", "/bkt?list-type=2&prefix=volumes/team-a/", nil, 200},
		{"list own prefix, other delimiter", "GET", "/bkt?list-type=2&prefix=volumes/team-a/&delimiter=-", nil, 403},
		{"list other team", "GET", "/bkt?list-type=2&prefix=volumes/team-b/data/&delimiter=/", nil, 403},
		{"list a longer name", "GET", "/bkt?list-type=2&prefix=volumes/team-a-b/&delimiter=/", nil, 403},
		{"list the parent", "GET", "/bkt?list-type=2&prefix=volumes/&delimiter=/", nil, 403},
		{"list the bucket", "GET", "/bkt?list-type=2", nil, 403},
		{"get own", "GET", "/bkt/volumes/team-a/data/a.txt", nil, 200},
		{"get other", "GET", "/bkt/volumes/team-b/data/b.txt", nil, 403},
		{"get a longer name", "GET", "/bkt/volumes/team-a-b/data/c.txt", nil, 403},
		{"head other", "HEAD", "/bkt/volumes/team-b/data/b.txt", nil, 403},
		{"put own", "PUT", "/bkt/volumes/team-a/data/new.txt", []byte("n"), 200},
		{"put other", "PUT", "/bkt/volumes/team-b/data/new.txt", []byte("n"), 403},
		{"put at the root", "PUT", "/bkt/x.txt", []byte("n"), 403},
		{"delete other", "DELETE", "/bkt/volumes/team-b/data/b.txt", nil, 403},
		{"multipart into other", "POST", "/bkt/volumes/team-b/big?uploads", nil, 403},
		{"delete bucket", "DELETE", "/bkt", nil, 403},
	}
	for _, tc := range tests {
		r := e.bearer(tokTeamA, tc.method, tc.path, tc.body)
		if r.status != tc.want {
			t.Errorf("%s: %d, want %d (%s)", tc.name, r.status, tc.want, r.body)
			continue
		}
		if tc.want == 403 && tc.method != "HEAD" {
			var se s3Error
			if err := xml.Unmarshal(r.body, &se); err != nil || se.Code != "AccessDenied" || se.Message != "Access Denied" || se.HTTPStatusCode != 403 {
				t.Errorf("%s: error body %s, want IBM's AccessDenied", tc.name, r.body)
			}
		}
	}
	// Copying out of another team's prefix needs read access there.
	r := e.bearer(tokTeamA, "PUT", "/bkt/volumes/team-a/stolen", nil, "X-Amz-Copy-Source", "/bkt/volumes/team-b/data/b.txt")
	expect(t, "copy from other", r, 403, "AccessDenied")
	// A multi-object delete deletes only what the policy allows, key by key.
	body := []byte(`<Delete><Object><Key>volumes/team-a/data/a.txt</Key></Object><Object><Key>volumes/team-b/data/b.txt</Key></Object></Delete>`)
	r = e.bearer(tokTeamA, "POST", "/bkt?delete", body, "Content-Md5", md5b64(body))
	if r.status != 200 || !strings.Contains(string(r.body), "<Deleted><Key>volumes/team-a/data/a.txt</Key>") ||
		!strings.Contains(string(r.body), "<Key>volumes/team-b/data/b.txt</Key><Code>AccessDenied</Code>") {
		t.Errorf("multi-object delete: %d %s", r.status, r.body)
	}
	if _, err := e.store.HeadObject("bkt", "volumes/team-b/data/b.txt"); err != nil {
		t.Errorf("team-b's object was deleted: %v", err)
	}
}
