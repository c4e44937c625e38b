package cos_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/emulator/config"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

// replaceFile renames a new file over path, as the node plugin does.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// HMAC keys rotated by replacing the credentials file: once the old key is
// revoked, requests keep working with the new one, without a new client.
func TestHMACFileRotation(t *testing.T) {
	env := emulatortest.Start(t)
	ctx := context.Background()
	id, secret := env.HMAC()
	path := filepath.Join(t.TempDir(), "hmac")
	replaceFile(t, path, id+":"+secret+"\n")
	c := newClient(t, env, func(o *cos.Options) { o.HMACFile = path })
	put := func(key string) error {
		_, err := c.PutObject(ctx, env.Bucket, key, bytes.NewReader([]byte(key)), int64(len(key)), cos.PutOptions{})
		return err
	}
	if err := put("before"); err != nil {
		t.Fatal(err)
	}
	principal := func() string {
		e := env.Audit()
		return e[len(e)-1].PrincipalID
	}
	if got := principal(); got != id {
		t.Fatalf("signed by %q, want %q", got, id)
	}

	// Rotate: a new key is created, the file replaced, the old key revoked.
	err := env.Emulator.UpdateConfig(func(cfg *config.Config) {
		k := cfg.HMACKeys[0]
		k.AccessKeyID, k.SecretAccessKey, k.SecretAccessKeyFile = "rotated-access-key", "rotated-secret", ""
		cfg.HMACKeys = []config.HMACKey{k} // the old key is gone
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := put("revoked"); err == nil {
		t.Fatal("a request signed with the revoked key succeeded: the test proves nothing")
	}
	replaceFile(t, path, "rotated-access-key:rotated-secret")
	if err := put("after"); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if got := principal(); got != "rotated-access-key" {
		t.Errorf("signed by %q after rotation, want the new key", got)
	}

	// A missing file is a credential error, not a COS answer, and names the file.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	err = put("missing")
	if !errors.Is(err, cos.ErrNoCredentials) || !strings.Contains(err.Error(), path) {
		t.Errorf("with the file gone: %v, want ErrNoCredentials naming the file", err)
	}
	if _, err := cos.New(cos.Options{Endpoint: env.COSURL, HMACFile: path}); err == nil {
		t.Error("a client was made from a missing credentials file")
	}
}
