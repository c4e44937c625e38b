package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
	"github.com/cosmount/cosmount/pkg/mounterapi"
)

// Every mount option and size form the driver accepts starts a real server;
// every one it refuses is InvalidArgument naming it, before anything runs.
func TestMountOptionTable(t *testing.T) {
	e := newE2E(t)
	e.startMounter()
	e.startPlugin()
	ctx := context.Background()
	accepted := [][]string{
		{"uid=1000", "gid=1000"}, {"file-mode=0640", "dir_mode=0750"}, {"allow_other"}, {"ro"}, {"rw"},
		{"attr_ttl=1m", "entry_ttl=0s", "negative_ttl=500ms"},
		{"part_size=16Mi"}, {"part_size=16MiB"}, {"part_size=16M"}, {"part_size=5242880"}, {"part_size=16MB"},
		{"memory_limit=300Mi"}, {"memory_limit=64MiB,part_size=8MiB"}, {"upload_concurrency=16"},
		{"multipart_threshold=32MB"}, {"multipart_threshold=1k"}, {"readahead_max=0"}, {"readahead_max=128MiB"},
		{"uid=1000,gid=2000,file_mode=0600,attr_ttl=2s,part_size=8Mi,upload_concurrency=8"},
		{"cache_memory=32Mi"}, {"cache_size=1Gi", "cache_memory=16MiB"},
	}
	for i, flags := range accepted {
		req := e.request(fmt.Sprintf("opt-%d", i), "default", emulatortest.WriterProfileID, flags...)
		if _, err := e.node.NodePublishVolume(ctx, req); err != nil {
			t.Errorf("mount flags %q: publish failed: %v", flags, err)
			continue
		}
		if st := e.status(req.TargetPath); st.State != mounterapi.StateHealthy {
			t.Errorf("mount flags %q: volume is %s: %s", flags, st.State, st.Message)
		}
		if err := e.unpublish(req); err != nil {
			t.Errorf("mount flags %q: unpublish: %v", flags, err)
		}
	}
	refused := []struct{ flag, names string }{
		{"part_size=1TB", "part_size"}, {"part_size=4MiB", "part_size"}, {"part_size=lots", "part_size"},
		{"upload_concurrency=100", "upload_concurrency"}, {"upload_concurrency=0", "upload_concurrency"},
		{"uid=-1", "uid"}, {"file_mode=0999", "file_mode"}, {"attr_ttl=-1s", "attr_ttl"},
		{"memory_limit=8MiB", "memory_limit"},
		// Larger than what the node's server memory budget (384MiB here) leaves.
		{"memory_limit=1GiB", "memory_limit"},
		{"noatime", "noatime"}, {"ro=1", "ro"}, {"temp_dir=/tmp", "temp_dir"}, {"prefix=other", "prefix"},
		{"cache_dir=/tmp", "cache_dir"}, {"cache_memory=300Mi", "cache_memory"}, {"cache_size=-1", "cache_size"},
	}
	for i, tc := range refused {
		req := e.request(fmt.Sprintf("bad-%d", i), "default", emulatortest.WriterProfileID, tc.flag)
		_, err := e.node.NodePublishVolume(ctx, req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.names) {
			t.Errorf("mount flag %q: %v, want InvalidArgument naming %s", tc.flag, err, tc.names)
		}
		if _, err := os.Stat(req.TargetPath); err == nil {
			t.Errorf("mount flag %q: the refused publish made the target", tc.flag)
		}
	}
	list, err := e.mounterC.List(ctx, &mounterapi.ListRequest{})
	if err != nil || len(list.Volumes) != 0 {
		t.Errorf("the mounter serves %d volumes after the table, want 0 (%v)", len(list.Volumes), err)
	}
	// The servers kept their disk caches in the mounter's --cache-dir, each
	// in a directory of its own that is gone with the server.
	if left, err := os.ReadDir(filepath.Join(e.dir, "cache")); err != nil || len(left) != 0 {
		t.Errorf("the node's cache directory holds %v after every volume is gone (%v)", left, err)
	}
}

// A volume with a disk cache reads a file again from the mounter's cache
// directory: the blocks land under --cache-dir while it is mounted.
func TestReadCacheUnderTheMountersDirectory(t *testing.T) {
	e := newE2E(t)
	e.startMounter()
	e.startPlugin()
	ctx := context.Background()
	req := e.request("cached", "default", emulatortest.WriterProfileID, "cache_size=256Mi")
	if _, err := e.node.NodePublishVolume(ctx, req); err != nil {
		t.Fatal(err)
	}
	defer e.unpublish(req)
	data := bytes.Repeat([]byte("cosmount read cache "), 200_000) // about 4 MiB
	if err := os.WriteFile(filepath.Join(req.TargetPath, "data.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	// Out of the kernel's page cache, so that the read reaches the server.
	if f, err := os.Open(filepath.Join(req.TargetPath, "data.bin")); err == nil {
		_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		f.Close()
	}
	if got, err := os.ReadFile(filepath.Join(req.TargetPath, "data.bin")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
	var cached int64
	_ = filepath.WalkDir(filepath.Join(e.dir, "cache"), func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && d.Name() != "lock" {
			var st syscall.Stat_t
			if syscall.Stat(path, &st) == nil {
				cached += st.Blocks * 512
			}
		}
		return nil
	})
	if cached < int64(len(data))/2 {
		t.Errorf("%d bytes in the mounter's cache directory after reading %d, want the blocks read", cached, len(data))
	}
	if err := e.unpublish(req); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(filepath.Join(e.dir, "cache")); len(left) != 0 {
		t.Errorf("the volume's cache is left behind after unpublish: %v", left)
	}
}

// writerHelperEnv makes this test binary a writer process: see
// TestHelperWriter.
const writerHelperEnv = "COSMOUNT_E2E_WRITER"

// TestHelperWriter is not a test: run with writerHelperEnv=FILE:MiB it
// writes MiB of a known pattern to FILE, says "written" and waits to be
// killed with the file still open, like a pod that is deleted mid-work.
func TestHelperWriter(t *testing.T) {
	spec := os.Getenv(writerHelperEnv)
	if spec == "" {
		t.Skip("helper process only")
	}
	path, n, _ := strings.Cut(spec, ":")
	mib, _ := strconv.Atoi(n)
	f, err := os.Create(path)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	for i := 0; i < mib; i++ {
		if _, err := f.Write(pattern(i)); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
	}
	fmt.Println("written")
	time.Sleep(time.Hour)
}

func pattern(i int) []byte {
	b := make([]byte, 1<<20)
	for j := range b {
		b[j] = byte(i*31 + j/7)
	}
	return b
}

// A pod deleted while its last files are still being uploaded, COS
// answering slowly. A process that dies with a file open waits in the kernel
// for that file's upload (FUSE's flush), so its data is in before kubelet
// unpublishes; an upload the kernel does not wait for (the release of a file
// created and closed without a write, or a retried upload) is still running
// when unpublish comes: it answers Unavailable, which kubelet retries, and
// never stops the server early. Every object lands complete.
func TestUnpublishWaitsForUploads(t *testing.T) {
	e := newE2E(t)
	e.startMounter()
	e.startPlugin()
	req := e.publish("slow", "default", emulatortest.WriterProfileID)
	e.env.COSFaults().SetLatency(400 * time.Millisecond)
	t.Cleanup(func() { e.env.COSFaults().SetLatency(0) })

	const mib = 40
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWriter$")
	cmd.Env = append(os.Environ(), writerHelperEnv+"="+filepath.Join(req.TargetPath, "last.bin")+":"+strconv.Itoa(mib))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "written" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("writer: %q", line)
	}
	// The pod is deleted: its process dies with the file open.
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	// And another of its processes had just created a file: its upload
	// runs after the close returned, behind a slower COS.
	e.env.COSFaults().SetLatency(3 * time.Second)
	f, err := os.Create(filepath.Join(req.TargetPath, "marker"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	unavailable := 0
	deadline := time.Now().Add(2 * time.Minute)
	for {
		err := e.unpublish(req)
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not yet uploaded") {
			t.Fatalf("unpublish while uploading: %v", err)
		}
		unavailable++
		if time.Now().After(deadline) {
			t.Fatalf("unpublish still refused after 2 minutes: %v", err)
		}
		time.Sleep(200 * time.Millisecond) // kubelet backs off longer
	}
	if unavailable == 0 {
		t.Error("unpublish did not wait for the upload of the marker (it answered OK at once)")
	}
	e.env.COSFaults().SetLatency(0)
	h := sha256.New()
	for i := 0; i < mib; i++ {
		h.Write(pattern(i))
	}
	got := e.readObject("last.bin")
	if len(got) != mib<<20 || sha256.Sum256([]byte(got)) != [32]byte(h.Sum(nil)) {
		t.Errorf("last.bin in the bucket: %d bytes, want %d with the written content", len(got), mib<<20)
	}
	if got := e.readObject("marker"); got != "" {
		t.Errorf("marker = %q", got)
	}
	e.assertGone(req.TargetPath)
}

// A server killed in the middle of a multipart upload leaves it in the
// bucket; the unpublish of its dead volume aborts it from the server's
// upload journal, so no orphaned parts stay behind.
func TestUnpublishAbortsUploadsOfADeadServer(t *testing.T) {
	e := newE2E(t)
	e.startMounter()
	e.startPlugin()
	req := e.publish("crashing", "default", emulatortest.WriterProfileID)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWriter$")
	cmd.Env = append(os.Environ(), writerHelperEnv+"="+filepath.Join(req.TargetPath, "unfinished.bin")+":40")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	if line, _ := bufio.NewReader(out).ReadString('\n'); strings.TrimSpace(line) != "written" {
		t.Fatalf("writer: %q", line)
	}
	// 40 MiB written, file still open: a multipart upload is under way.
	uploads := func() int {
		t.Helper()
		list, err := e.env.Emulator.Store().ListMultipartUploads(e.env.Bucket)
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	if n := uploads(); n != 1 {
		t.Fatalf("%d multipart uploads in progress, want 1", n)
	}
	killServer(t, e.mounter.PID(), e.status(req.TargetPath).PID)
	waitFor(t, "the killed server to be recorded", func() bool {
		st, err := e.mounterC.Status(context.Background(), &mounterapi.StatusRequest{Target: req.TargetPath})
		return err == nil && st.State == mounterapi.StateDead && st.Reason == "ServerKilled"
	})
	cmd.Process.Kill()
	cmd.Wait()
	if n := uploads(); n != 1 {
		t.Fatalf("%d multipart uploads after the crash, want the one left behind", n)
	}
	if err := e.unpublish(req); err != nil {
		t.Fatalf("unpublish of the dead volume: %v", err)
	}
	if n := uploads(); n != 0 {
		t.Errorf("%d multipart uploads left after the unpublish, want 0", n)
	}
	if !strings.Contains(e.log("mounter.log"), "Aborted the multipart uploads the server left unfinished") {
		t.Error("the mounter did not say it aborted the uploads")
	}
	e.assertGone(req.TargetPath)
}
