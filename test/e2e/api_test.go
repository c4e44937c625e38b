package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"

	"github.com/cosmount/cosmount/pkg/cos"
	"github.com/cosmount/cosmount/pkg/emulator/audit"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

// api is the bucket seen through the S3 API with the emulator's HMAC key,
// independent of the mount under test.
type api struct {
	t *testing.T
	b *cos.Bucket
}

func newAPI(t *testing.T, env *emulatortest.Env) *api {
	t.Helper()
	id, secret := env.HMAC()
	c, err := cos.New(cos.Options{Endpoint: env.COSURL, UsePathStyle: true, HMAC: &cos.HMAC{AccessKeyID: id, SecretAccessKey: secret}})
	if err != nil {
		t.Fatal(err)
	}
	return &api{t: t, b: c.Bucket(env.Bucket)}
}

// get returns an object's bytes; ok is false if it does not exist.
func (a *api) get(key string) (data []byte, ok bool) {
	a.t.Helper()
	body, _, err := a.b.Get(context.Background(), key, cos.GetOptions{})
	if errors.Is(err, cos.ErrNotFound) {
		return nil, false
	}
	if err != nil {
		a.t.Fatalf("GET %s through the API: %v", key, err)
	}
	defer body.Close()
	data, err = io.ReadAll(body)
	if err != nil {
		a.t.Fatalf("GET %s through the API: %v", key, err)
	}
	return data, true
}

// wantObject fails the test unless key holds exactly want.
func (a *api) wantObject(key string, want []byte) {
	a.t.Helper()
	got, ok := a.get(key)
	switch {
	case !ok:
		a.t.Errorf("object %s does not exist, want %q", key, abbreviate(want))
	case !bytes.Equal(got, want):
		a.t.Errorf("object %s = %q, want %q", key, abbreviate(got), abbreviate(want))
	}
}

// wantMissing fails the test if key exists.
func (a *api) wantMissing(key string) {
	a.t.Helper()
	if got, ok := a.get(key); ok {
		a.t.Errorf("object %s exists (%q), want it gone", key, abbreviate(got))
	}
}

// head returns an object's attributes and metadata; ok is false if it does not exist.
func (a *api) head(key string) (cos.ObjectInfo, bool) {
	a.t.Helper()
	info, err := a.b.Head(context.Background(), key)
	if errors.Is(err, cos.ErrNotFound) {
		return cos.ObjectInfo{}, false
	}
	if err != nil {
		a.t.Fatalf("HEAD %s through the API: %v", key, err)
	}
	return info, true
}

// put writes an object.
func (a *api) put(key string, data []byte) {
	a.t.Helper()
	if err := a.tryPut(key, data); err != nil {
		a.t.Fatal(err)
	}
}

// tryPut writes an object; unlike put it may be called from any goroutine.
func (a *api) tryPut(key string, data []byte) error {
	if _, err := a.b.Put(context.Background(), key, bytes.NewReader(data), int64(len(data)), cos.PutOptions{}); err != nil {
		return fmt.Errorf("PUT %s through the API: %w", key, err)
	}
	return nil
}

// keys lists every key under prefix (no delimiter, every page), sorted.
func (a *api) keys(prefix string) []string {
	a.t.Helper()
	var keys []string
	opts := cos.ListOptions{Prefix: prefix}
	for {
		page, err := a.b.List(context.Background(), opts)
		if err != nil {
			a.t.Fatalf("list %q through the API: %v", prefix, err)
		}
		for _, o := range page.Objects {
			keys = append(keys, o.Key)
		}
		if page.NextContinuationToken == "" {
			break
		}
		opts.ContinuationToken = page.NextContinuationToken
	}
	slices.Sort(keys)
	return keys
}

// sha256Of streams an object through SHA-256 without holding it in memory.
func (a *api) sha256Of(key string) ([32]byte, int64) {
	a.t.Helper()
	body, _, err := a.b.Get(context.Background(), key, cos.GetOptions{})
	if err != nil {
		a.t.Fatalf("GET %s through the API: %v", key, err)
	}
	defer body.Close()
	h := sha256.New()
	n, err := io.Copy(h, body)
	if err != nil {
		a.t.Fatalf("GET %s through the API: %v", key, err)
	}
	return [32]byte(h.Sum(nil)), n
}

// cosEntries keeps the COS entries of an audit slice.
func cosEntries(entries []audit.Entry) []audit.Entry {
	var out []audit.Entry
	for _, e := range entries {
		if e.Service == "cos" {
			out = append(out, e)
		}
	}
	return out
}

// byOperation keeps the entries of one operation, on one key if key is not empty.
func byOperation(entries []audit.Entry, op, key string) []audit.Entry {
	var out []audit.Entry
	for _, e := range entries {
		if e.Operation == op && (key == "" || e.Key == key) {
			out = append(out, e)
		}
	}
	return out
}

// abbreviate keeps failure messages readable for large payloads.
func abbreviate(b []byte) string {
	const max = 200
	if len(b) <= max {
		return string(b)
	}
	return fmt.Sprintf("%s... (%d bytes)", b[:max], len(b))
}
