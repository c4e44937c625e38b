package e2e

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

// TestTwoWritersLastCloseWins (docs/SEMANTICS.md): two mounts of one bucket
// (two nodes) write the same file. Each close uploads the whole file with
// no precondition, so the later close silently replaces the earlier one,
// and neither writer gets an error. The other mount sees the winner once
// its attribute cache expires.
func TestTwoWritersLastCloseWins(t *testing.T) {
	env := emulatortest.Start(t)
	b := newAPI(t, env)
	m1 := mountWriter(t, env, "attr_ttl=1s,entry_ttl=1s,negative_ttl=1s")
	m2 := mountWriter(t, env, "attr_ttl=1s,entry_ttl=1s,negative_ttl=1s")

	f1, err := os.Create(m1.path("shared.txt"))
	if err != nil {
		t.Fatal(err)
	}
	f2, err := os.Create(m2.path("shared.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f1.Write([]byte("written on node one\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := f2.Write([]byte("node two\n")); err != nil {
		t.Fatal(err)
	}
	if err := f2.Close(); err != nil {
		t.Fatalf("close on node two: %v", err)
	}
	b.wantObject("shared.txt", []byte("node two\n"))
	if err := f1.Close(); err != nil {
		t.Fatalf("close on node one, after node two's: %v (last close wins silently)", err)
	}
	b.wantObject("shared.txt", []byte("written on node one\n"))

	// Node two reads node one's data once its cached attributes expire.
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := os.ReadFile(m2.path("shared.txt"))
		if err == nil && bytes.Equal(got, []byte("written on node one\n")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node two still reads %q (%v)", got, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestCrashKeepsOnlyWhatWasSaved (docs/SEMANTICS.md): when the server is
// killed, what a close or an fsync reported saved is in the bucket; what
// was written and not saved is gone, and the half-done upload leaves no
// object (and no visible partial data).
func TestCrashKeepsOnlyWhatWasSaved(t *testing.T) {
	env := emulatortest.Start(t)
	b := newAPI(t, env)
	s := mountWriter(t, env, "part_size=5MiB", "multipart_threshold=5MiB")

	if err := os.WriteFile(s.path("closed.txt"), []byte("closed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	synced, err := os.Create(s.path("synced.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := synced.Write([]byte("before fsync\n")); err != nil {
		t.Fatal(err)
	}
	if err := synced.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := synced.Write([]byte("after fsync\n")); err != nil {
		t.Fatal(err)
	}
	open, err := os.Create(s.path("open.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open.Write([]byte("never saved\n")); err != nil {
		t.Fatal(err)
	}
	big, err := os.Create(s.path("big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := big.Write(bytes.Repeat([]byte("b"), 12<<20)); err != nil { // a streaming upload is under way
		t.Fatal(err)
	}

	s.Kill()
	for _, f := range []*os.File{synced, open, big} {
		if err := f.Close(); !errors.Is(err, syscall.ENOTCONN) && err != nil {
			t.Logf("close after the crash: %v", err)
		}
	}
	if out, err := exec.Command("fusermount3", "-uz", s.dir).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -uz: %v %s", err, out)
	}
	b.wantObject("closed.txt", []byte("closed\n"))
	b.wantObject("synced.txt", []byte("before fsync\n"))
	b.wantMissing("open.txt")
	b.wantMissing("big.bin")
}
