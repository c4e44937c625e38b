// Command fakemount stands in for `cosmount mount --foreground` in the
// mounter's tests: it accepts the same command line, checks that exactly one
// credential file was given and is readable, reports readiness on the fd
// named by COSMOUNT_READY_FD as cosmount does, serves a control socket and a
// real FUSE mount (fstype fuse.cosmount) with a few read-only files that let
// tests look inside the server:
//
//	pid      the server's process ID (same value after a republish = not restarted)
//	credsum  sha256 of the credential file, re-read at every read
//	env      the server's environment, one K=V per line (values of *TOKEN*/*KEY* hidden)
//	args     its command line, one argument per line
//	oomadj   its /proc/self/oom_score_adj
//	cgroup   its memory cgroup line from /proc/self/cgroup
//
// The control socket answers /v1/status with the pending counts written in
// the file fake-pending next to the credential file ("FILES BYTES", absent
// means nothing pending) and POST /v1/flush by removing that file.
//
// The bucket name picks a behaviour: fake-fail reports an error and exits
// before mounting; fake-silent exits without a report; fake-hang never
// reports; fake-stubborn ignores SIGTERM; fake-hog allocates memory without
// end once mounted. Otherwise SIGTERM unmounts and exits.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "mount" {
		fmt.Fprintln(os.Stderr, "usage: fakemount mount [flags] BUCKET[:/PREFIX] MOUNTPOINT")
		os.Exit(2)
	}
	fl := flag.NewFlagSet("mount", flag.ExitOnError)
	fl.Bool("foreground", false, "")
	endpoint := fl.String("endpoint", "", "")
	fl.String("region", "", "")
	fl.String("iam-endpoint", "", "")
	fl.String("trusted-profile-id", "", "")
	fl.String("trusted-profile-name", "", "")
	fl.String("trusted-profile-crn", "", "")
	crFile := fl.String("cr-token-file", "", "")
	keyFile := fl.String("api-key-file", "", "")
	hmacFile := fl.String("hmac-credentials-file", "", "")
	opts := fl.String("o", "", "")
	control := fl.String("control-socket", "", "")
	fl.String("volume-id", "", "")
	fl.Duration("start-timeout", 0, "")
	fl.String("upload-journal", "", "")
	fl.Parse(os.Args[2:])
	ready := func(msg string) {
		if os.Getenv("COSMOUNT_READY_FD") == "3" {
			f := os.NewFile(3, "ready")
			fmt.Fprintln(f, msg)
			f.Close()
		}
	}
	fail := func(code int, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		fmt.Fprintln(os.Stderr, "fakemount:", msg)
		ready("error: " + msg)
		os.Exit(code)
	}
	if fl.NArg() != 2 || *endpoint == "" {
		fail(2, "need --endpoint, BUCKET and MOUNTPOINT")
	}
	var credFile string
	n := 0
	for _, f := range []string{*crFile, *keyFile, *hmacFile} {
		if f != "" {
			credFile = f
			n++
		}
	}
	if n != 1 {
		fail(2, "need exactly one credential file")
	}
	if _, err := os.ReadFile(credFile); err != nil {
		fail(2, "%v", err)
	}
	bucket, _, _ := strings.Cut(fl.Arg(0), ":")
	switch bucket {
	case "fake-fail":
		fail(3, "failing as asked")
	case "fake-silent":
		os.Exit(4)
	case "fake-hang":
		select {}
	}
	mountOpts := []fuse.MountOption{fuse.FSName("cosmount"), fuse.Subtype("cosmount")}
	for _, o := range strings.Split(*opts, ",") {
		switch o {
		case "ro":
			mountOpts = append(mountOpts, fuse.ReadOnly())
		case "allow_other":
			mountOpts = append(mountOpts, fuse.AllowOther())
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if bucket == "fake-stubborn" {
		stop()
		signal.Ignore(syscall.SIGTERM)
		ctx = context.Background()
	}
	target := fl.Arg(1)
	c, err := fuse.Mount(target, mountOpts...)
	if err != nil {
		fail(1, "mount: %v", err)
	}
	pendingFile := filepath.Join(filepath.Dir(credFile), "fake-pending")
	if *control != "" {
		serveControl(*control, pendingFile)
	}
	fmt.Fprintln(os.Stderr, "fakemount: serving", target)
	go func() {
		<-ctx.Done()
		fuse.Unmount(target)
	}()
	if bucket == "fake-hog" {
		go hog()
	}
	files := map[string]func() string{
		"pid": func() string { return strconv.Itoa(os.Getpid()) + "\n" },
		"credsum": func() string {
			b, err := os.ReadFile(credFile)
			if err != nil {
				return "error: " + err.Error() + "\n"
			}
			sum := sha256.Sum256(b)
			return hex.EncodeToString(sum[:]) + "\n"
		},
		"env": func() string {
			var kvs []string
			for _, kv := range os.Environ() {
				k, _, _ := strings.Cut(kv, "=")
				if strings.Contains(k, "TOKEN") || strings.Contains(k, "KEY") {
					kv = k + "=(hidden)"
				}
				kvs = append(kvs, kv)
			}
			sort.Strings(kvs)
			return strings.Join(kvs, "\n") + "\n"
		},
		"args":   func() string { return strings.Join(os.Args, "\n") + "\n" },
		"oomadj": func() string { return readFile("/proc/self/oom_score_adj") },
		"cgroup": func() string {
			for _, l := range strings.Split(readFile("/proc/self/cgroup"), "\n") {
				if strings.Contains(l, ":memory:") || strings.HasPrefix(l, "0::") {
					return l + "\n"
				}
			}
			return "\n"
		},
	}
	ready("ok")
	if err := fs.Serve(c, root{files}); err != nil {
		fmt.Fprintln(os.Stderr, "fakemount: serve:", err)
		os.Exit(1)
	}
	c.Close()
}

func readFile(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return "error: " + err.Error() + "\n"
	}
	return string(b)
}

// hog allocates and touches memory until the kernel ends the process.
var hoard [][]byte

func hog() {
	for {
		b := make([]byte, 8<<20)
		for i := range b {
			b[i] = 1
		}
		hoard = append(hoard, b)
		time.Sleep(5 * time.Millisecond)
	}
}

func serveControl(sock, pendingFile string) {
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakemount: control socket:", err)
		os.Exit(1)
	}
	status := func(w http.ResponseWriter, code int) {
		var p struct {
			Files int   `json:"files"`
			Bytes int64 `json:"bytes"`
		}
		if b, err := os.ReadFile(pendingFile); err == nil {
			fmt.Sscan(string(b), &p.Files, &p.Bytes)
		}
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]any{"pid": os.Getpid(), "pending": p})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { status(w, 200) })
	mux.HandleFunc("POST /v1/flush", func(w http.ResponseWriter, r *http.Request) {
		os.Remove(pendingFile)
		status(w, 202)
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintln(w, "# TYPE cosmount_s3_requests_total counter")
		fmt.Fprintln(w, `cosmount_s3_requests_total{operation="PutObject"} 1`)
	})
	go http.Serve(ln, mux)
}

type root struct{ files map[string]func() string }

var (
	_ fs.FS                 = root{}
	_ fs.HandleReadDirAller = (*dir)(nil)
	_ fs.NodeStringLookuper = (*dir)(nil)
	_ fs.HandleReadAller    = (*file)(nil)
	_ fs.NodeOpener         = (*file)(nil)
)

func (r root) Root() (fs.Node, error) {
	d := dir(r)
	return &d, nil
}

type dir struct{ files map[string]func() string }

func (*dir) Attr(ctx context.Context, a *fuse.Attr) error {
	a.Inode = 1
	a.Mode = os.ModeDir | 0o755
	return nil
}

func (d *dir) Lookup(ctx context.Context, name string) (fs.Node, error) {
	if f, ok := d.files[name]; ok {
		return &file{f}, nil
	}
	return nil, syscall.ENOENT
}

func (d *dir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	var out []fuse.Dirent
	for name := range d.files {
		out = append(out, fuse.Dirent{Name: name, Type: fuse.DT_File})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

type file struct{ content func() string }

func (f *file) Attr(ctx context.Context, a *fuse.Attr) error {
	a.Mode = 0o444
	a.Size = uint64(len(f.content()))
	return nil
}

// Open asks for direct I/O so every read reaches the server and sees fresh content.
func (f *file) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	resp.Flags |= fuse.OpenDirectIO
	return f, nil
}

func (f *file) ReadAll(ctx context.Context) ([]byte, error) { return []byte(f.content()), nil }
