package cosserver

import (
	"crypto/md5"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/store"
)

func md5Header(b []byte) string {
	sum := md5.Sum(b)
	return base64.StdEncoding.EncodeToString(sum[:])
}

func TestBucketLifecycleConfiguration(t *testing.T) {
	e := newEnv(t)
	doc := []byte(`<LifecycleConfiguration><Rule><ID>abort</ID><Filter><Prefix></Prefix></Filter><Status>Enabled</Status>` +
		`<AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule></LifecycleConfiguration>`)

	expect(t, "get without a configuration", e.bearer(tokManager, "GET", "/bkt?lifecycle", nil), http.StatusNotFound, "NoSuchLifecycleConfiguration")
	expect(t, "put without Content-MD5", e.bearer(tokManager, "PUT", "/bkt?lifecycle", doc), http.StatusBadRequest, "InvalidRequest")
	expect(t, "put by a writer", e.bearer(tokWriter, "PUT", "/bkt?lifecycle", doc, "Content-MD5", md5Header(doc)), http.StatusForbidden, "AccessDenied")
	for name, bad := range map[string]string{
		"not xml":      `<Lifecycle`,
		"no rule":      `<LifecycleConfiguration></LifecycleConfiguration>`,
		"bad status":   `<LifecycleConfiguration><Rule><Status>On</Status><Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>`,
		"no action":    `<LifecycleConfiguration><Rule><Status>Enabled</Status></Rule></LifecycleConfiguration>`,
		"zero days":    `<LifecycleConfiguration><Rule><Status>Enabled</Status><AbortIncompleteMultipartUpload><DaysAfterInitiation>0</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule></LifecycleConfiguration>`,
		"duplicate id": `<LifecycleConfiguration><Rule><ID>a</ID><Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule><Rule><ID>a</ID><Status>Enabled</Status><Expiration><Days>2</Days></Expiration></Rule></LifecycleConfiguration>`,
	} {
		r := e.bearer(tokManager, "PUT", "/bkt?lifecycle", []byte(bad), "Content-MD5", md5Header([]byte(bad)))
		if r.status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", name, r.status)
		}
	}
	expect(t, "put", e.bearer(tokManager, "PUT", "/bkt?lifecycle", doc, "Content-MD5", md5Header(doc)), http.StatusOK, "")
	got := e.bearer(tokReader, "GET", "/bkt?lifecycle", nil)
	expect(t, "get", got, http.StatusOK, "")
	for _, want := range []string{"<ID>abort</ID>", "<Status>Enabled</Status>", "<DaysAfterInitiation>1</DaysAfterInitiation>"} {
		if !strings.Contains(string(got.body), want) {
			t.Errorf("GET lifecycle %s lacks %s", got.body, want)
		}
	}

	// The rule is applied when uploads are listed or started: an upload
	// older than a day is aborted, a younger one kept.
	old, err := e.store.CreateMultipartUpload("bkt", "old", store.ObjectMeta{})
	if err != nil {
		t.Fatal(err)
	}
	e.srv.clock = func() time.Time { return time.Now().Add(25 * time.Hour) }
	list := e.bearer(tokManager, "GET", "/bkt?uploads", nil)
	if strings.Contains(string(list.body), old.ID) {
		t.Errorf("an upload older than the rule's day is still listed: %s", list.body)
	}
	e.srv.clock = time.Now
	young, err := e.store.CreateMultipartUpload("bkt", "young", store.ObjectMeta{})
	if err != nil {
		t.Fatal(err)
	}
	list = e.bearer(tokManager, "GET", "/bkt?uploads", nil)
	if !strings.Contains(string(list.body), young.ID) {
		t.Errorf("a fresh upload was aborted: %s", list.body)
	}

	expect(t, "delete", e.bearer(tokManager, "DELETE", "/bkt?lifecycle", nil), http.StatusNoContent, "")
	expect(t, "get after delete", e.bearer(tokManager, "GET", "/bkt?lifecycle", nil), http.StatusNotFound, "NoSuchLifecycleConfiguration")
}
