package e2e

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

// TestListLargeDirectory: `ls -l` of a directory of 5,000 objects shows all
// of them with their sizes, and costs list requests only: one listing fills
// the attribute cache, there is no HEAD or GET per entry.
func TestListLargeDirectory(t *testing.T) {
	requireFUSE(t)
	const objects = 5000
	env := emulatortest.Start(t)
	b := newAPI(t, env)

	sizeOf := func(i int) int { return i % 1000 }
	name := func(i int) string { return fmt.Sprintf("obj-%05d.dat", i) }
	putParallel(t, 16, objects, func(i int) error {
		return b.tryPut("big/"+name(i), bytes.Repeat([]byte{byte(i)}, sizeOf(i)))
	})

	// Long TTLs: on a busy two-core machine `ls -l` of 5,000 entries may take
	// longer than the 5 s default, and an expired attribute would be fetched
	// again (legitimately) with HEAD; this test is about what one listing
	// provides, not about expiry.
	m := mountWriter(t, env, "attr_ttl=10m,entry_ttl=10m")
	// Look the directory itself up first: how "big" is resolved in the root
	// is not part of listing it.
	shell(t, m.dir, "test -d big")

	n := env.AuditLen()
	out := shell(t, m.dir, "ls -l big")
	during := cosEntries(env.AuditSince(n))

	got := map[string]int64{}
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "total" {
			continue
		}
		if len(f) < 9 || !strings.HasPrefix(f[0], "-") {
			t.Errorf("unexpected ls -l line %q", line)
			continue
		}
		size, err := strconv.ParseInt(f[4], 10, 64)
		if err != nil {
			t.Errorf("size in ls -l line %q: %v", line, err)
		}
		got[f[len(f)-1]] = size
	}
	if len(got) != objects {
		t.Errorf("ls -l big shows %d entries, want %d", len(got), objects)
	}
	for i := range objects {
		if size, ok := got[name(i)]; !ok {
			t.Errorf("ls -l big lacks %s", name(i))
		} else if size != int64(sizeOf(i)) {
			t.Errorf("ls -l big shows %s with size %d, want %d", name(i), size, sizeOf(i))
		}
	}

	ops := map[string]int{}
	for _, e := range during {
		ops[e.Operation]++
	}
	lists := ops["ListObjectsV2"]
	t.Logf("requests during ls -l of %d objects: %v", objects, ops)
	fmt.Printf("e2e: ls -l of %d objects: %d ListObjectsV2 requests, %d requests in all\n", objects, lists, len(during))
	if len(during) != lists {
		t.Errorf("requests other than ListObjectsV2 during ls -l: %v", ops)
	}
	// 1,000 keys per page: 5 pages, and a little slack for a second listing
	// pass the kernel may trigger (readdir restarted at offset 0).
	if lists < objects/1000 || lists > 2*objects/1000 {
		t.Errorf("%d ListObjectsV2 requests for %d objects, want %d to %d", lists, objects, objects/1000, 2*objects/1000)
	}
}

// TestImplicitDirectories: objects created through the API under prefixes
// without directory markers show up as directories and files.
func TestImplicitDirectories(t *testing.T) {
	env := emulatortest.Start(t)
	b := newAPI(t, env)
	b.put("x/y/z.txt", []byte("deep inside\n"))
	b.put("x/top.txt", []byte("top\n"))
	m := mountWriter(t, env)

	if got := shell(t, m.dir, "ls"); got != "x\n" {
		t.Errorf("ls = %q, want x", got)
	}
	if got := shell(t, m.dir, "ls x"); got != "top.txt\ny\n" {
		t.Errorf("ls x = %q, want top.txt and y", got)
	}
	if got := shell(t, m.dir, "test -d x/y && ls x/y"); got != "z.txt\n" {
		t.Errorf("ls x/y = %q, want z.txt", got)
	}
	if got := shell(t, m.dir, "cat x/y/z.txt x/top.txt"); got != "deep inside\ntop\n" {
		t.Errorf("cat = %q", got)
	}
	// The implicit directory is usable like any other: a file created in it
	// lands under its prefix, still without a marker.
	shell(t, m.dir, "echo new > x/y/new.txt")
	b.wantObject("x/y/new.txt", []byte("new\n"))
	if keys := b.keys("x/"); !slices.Equal(keys, []string{"x/top.txt", "x/y/new.txt", "x/y/z.txt"}) {
		t.Errorf("keys under x/ = %v", keys)
	}
}

// putParallel runs put(0..n-1) on workers goroutines and fails the test
// with the first error.
func putParallel(t *testing.T, workers, n int, put func(i int) error) {
	t.Helper()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := put(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}

// TestPrefixAndOwnership: BUCKET:/PREFIX shows only that subtree and writes
// below it; uid, gid and the modes from -o are what stat shows for objects
// without s3fs metadata.
func TestPrefixAndOwnership(t *testing.T) {
	requireFUSE(t)
	env := emulatortest.Start(t)
	b := newAPI(t, env)
	b.put("outside.txt", []byte("not in the subtree\n"))
	b.put("team/inside.txt", []byte("in the subtree\n"))
	b.put("team/sub/deeper.txt", []byte("deeper\n"))

	args := slices.Concat(writerArgs(t, env), []string{
		"-o", "temp_dir=" + t.TempDir() + ",uid=1234,gid=2345,file_mode=0600,dir_mode=0700",
		env.Bucket + ":/team",
	})
	m, err := startServer(t, args)
	if err != nil {
		t.Fatal(err)
	}
	if got := shell(t, m.dir, "ls"); got != "inside.txt\nsub\n" {
		t.Errorf("ls of the prefix mount = %q, want inside.txt and sub", got)
	}
	shell(t, m.dir, "echo written > new.txt && mkdir made")
	b.wantObject("team/new.txt", []byte("written\n"))
	b.wantObject("team/made/", nil)
	b.wantMissing("new.txt")

	for _, c := range []struct {
		name string
		want string
	}{
		{"inside.txt", "1234 2345 600 regular file"},
		{"sub", "1234 2345 700 directory"},
	} {
		if got := strings.TrimSpace(shell(t, m.dir, "stat -c '%u %g %a %F' "+c.name)); got != c.want {
			t.Errorf("stat %s = %q, want %q", c.name, got, c.want)
		}
	}
}
