package emulator_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"github.com/cosmount/cosmount/pkg/emulator"
	"github.com/cosmount/cosmount/pkg/emulator/cosserver"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

// In backend mode the emulator authenticates and authorizes with IAM tokens
// and stores objects in another S3 server (here a second emulator reached
// with HMAC), as it would in front of versitygw or MinIO.
func TestBackendMode(t *testing.T) {
	back := emulatortest.Start(t)
	id, secret := back.HMAC()
	u, err := url.Parse(back.COSURL)
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	cfg, err := emulator.DefaultConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	be := &cosserver.Backend{URL: u, AccessKeyID: id, SecretAccessKey: secret}
	if _, err := emulator.New(cfg, emulator.Options{DataDir: dir, Backend: be, Buckets: emulator.DefaultBuckets()}); err == nil {
		t.Fatal("New accepted Buckets together with a Backend")
	}
	cfg, _ = emulator.DefaultConfig(dir)
	front, err := emulator.New(cfg, emulator.Options{DataDir: dir, Backend: be})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = front.Close() })
	if front.Store() != nil {
		t.Error("backend mode opened the embedded store")
	}
	iamL, cosL := listen(t), listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- front.Serve(ctx, iamL, cosL) }()
	t.Cleanup(func() { cancel(); <-done })
	frontEnv := &emulatortest.Env{IAMURL: "http://" + iamL.Addr().String(), COSURL: "http://" + cosL.Addr().String()}

	status, tr := exchange(t, frontEnv.IAMURL, url.Values{"grant_type": {grantAPIKey}, "apikey": {emulator.DefaultAPIKey}})
	if status != http.StatusOK {
		t.Fatalf("exchange at the front: %d %s", status, tr.ErrorCode)
	}
	if st, body := cos(t, frontEnv, "PUT", "/test-bucket/via-front", tr.AccessToken, "proxied"); st != http.StatusOK {
		t.Fatalf("PUT through the front: %d %s", st, body)
	}
	got := front.Audit().Entries()
	if len(got) != 2 || got[1].PrincipalID != emulator.DefaultAPIKeyID || got[1].AuthScheme != "bearer" {
		t.Errorf("front audit %+v", got)
	}
	// The object is in the backend, written there with the backend's HMAC key.
	var stored bool
	for _, e := range back.Audit() {
		if e.Operation == "PutObject" && e.Key == "via-front" && e.Status == 200 && e.PrincipalID == id && e.AuthScheme == "sigv4" {
			stored = true
		}
	}
	if !stored {
		t.Errorf("no signed PutObject at the backend: %+v", back.Audit())
	}
	if st, body := cos(t, frontEnv, "GET", "/test-bucket/via-front", "", ""); st != http.StatusForbidden {
		t.Errorf("anonymous GET through the front: %d %s", st, body)
	}
}
