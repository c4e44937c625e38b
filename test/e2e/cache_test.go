package e2e

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

// TestExternalChangesBecomeVisible: an object replaced through the API by
// content of the same size is read anew once the attribute TTL has passed;
// the kernel's page cache must not keep serving the old bytes.
func TestExternalChangesBecomeVisible(t *testing.T) {
	env := emulatortest.Start(t)
	b := newAPI(t, env)
	v1 := bytes.Repeat([]byte("version one\n"), 1000)
	v2 := bytes.Repeat([]byte("version two\n"), 1000)
	b.put("shared.txt", v1)
	m := mountWriter(t, env, "attr_ttl=1s,entry_ttl=1s,negative_ttl=1s")

	// Twice, so that the second open may keep the page cache of the first.
	for range 2 {
		if got, err := os.ReadFile(m.path("shared.txt")); err != nil || !bytes.Equal(got, v1) {
			t.Fatalf("first read = %q, %v", abbreviate(got), err)
		}
	}
	b.put("shared.txt", v2)
	// The TTL is 1 s; allow a busy machine plenty more before calling the
	// old content stale for good.
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := os.ReadFile(m.path("shared.txt"))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(got, v2) {
			break
		}
		if !bytes.Equal(got, v1) {
			t.Fatalf("read a mix of versions: %q", abbreviate(got))
		}
		if time.Now().After(deadline) {
			t.Fatal("still reading the old content 30 s after the object was replaced (attr_ttl=1s)")
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A name created through the API after the mount looked it up (and
	// remembered it as missing) appears once the negative TTL has passed.
	if _, err := os.Stat(m.path("late.txt")); !os.IsNotExist(err) {
		t.Fatalf("stat late.txt before it exists: %v", err)
	}
	b.put("late.txt", []byte("late\n"))
	deadline = time.Now().Add(30 * time.Second)
	for {
		got, err := os.ReadFile(m.path("late.txt"))
		if err == nil {
			if string(got) != "late\n" {
				t.Errorf("late.txt = %q", got)
			}
			break
		}
		if !os.IsNotExist(err) || time.Now().After(deadline) {
			t.Fatalf("late.txt 30 s after it was created (negative_ttl=1s): %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestNegativeCache: repeated lookups of a missing name cost no request
// after the first while the negative TTL lasts.
func TestNegativeCache(t *testing.T) {
	env := emulatortest.Start(t)
	m := mountWriter(t, env, "negative_ttl=10m,entry_ttl=10m,attr_ttl=10m")
	n := env.AuditLen()
	for range 20 {
		if _, err := os.Stat(m.path("missing.txt")); !os.IsNotExist(err) {
			t.Fatalf("stat missing.txt: %v", err)
		}
	}
	ops := map[string]int{}
	entries := cosEntries(env.AuditSince(n))
	for _, e := range entries {
		ops[e.Operation]++
	}
	t.Logf("requests for 20 lookups of a missing name: %v", ops)
	// The first lookup may HEAD the name, list it as a prefix and list the
	// directory once (which answers later misses in it).
	if len(entries) > 3 {
		t.Errorf("%d requests for 20 lookups of a missing name, want at most 3: %v", len(entries), ops)
	}
}
