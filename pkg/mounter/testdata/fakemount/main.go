// Command fakemount stands in for `cosmount mount --foreground` in the
// mounter's tests: it accepts the same command line, checks that exactly one
// credential file was given and is readable, and serves a real FUSE mount
// (fstype fuse.cosmount) with a few read-only files that let tests look
// inside the server:
//
//	pid      the server's process ID (same value after a republish = not restarted)
//	credsum  sha256 of the credential file, re-read at every read
//	env      the names of the server's environment variables
//	source   the BUCKET[:/PREFIX] argument
//	metrics  the --metrics-socket argument (empty when not given)
//
// Test-only -o options: fake_fail exits with an error before mounting;
// fake_nomount runs without ever mounting. SIGTERM unmounts and exits.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"

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
	metricsSocket := fl.String("metrics-socket", "", "")
	fl.Parse(os.Args[2:])
	if fl.NArg() != 2 || *endpoint == "" {
		fmt.Fprintln(os.Stderr, "fakemount: need --endpoint, BUCKET and MOUNTPOINT")
		os.Exit(2)
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
		fmt.Fprintln(os.Stderr, "fakemount: need exactly one credential file")
		os.Exit(2)
	}
	if _, err := os.ReadFile(credFile); err != nil {
		fmt.Fprintln(os.Stderr, "fakemount:", err)
		os.Exit(2)
	}
	mountOpts := []fuse.MountOption{fuse.FSName("cosmount"), fuse.Subtype("cosmount")}
	nomount := false
	for _, o := range strings.Split(*opts, ",") {
		switch o {
		case "fake_fail":
			fmt.Fprintln(os.Stderr, "fakemount: failing as asked")
			os.Exit(3)
		case "fake_nomount":
			nomount = true
		case "ro":
			mountOpts = append(mountOpts, fuse.ReadOnly())
		case "allow_other":
			mountOpts = append(mountOpts, fuse.AllowOther())
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if nomount {
		<-ctx.Done()
		return
	}
	target := fl.Arg(1)
	c, err := fuse.Mount(target, mountOpts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakemount: mount:", err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "fakemount: serving", target)
	go func() {
		<-ctx.Done()
		fuse.Unmount(target)
	}()
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
			var names []string
			for _, kv := range os.Environ() {
				k, _, _ := strings.Cut(kv, "=")
				names = append(names, k)
			}
			sort.Strings(names)
			return strings.Join(names, "\n") + "\n"
		},
		"source":  func() string { return fl.Arg(0) + "\n" },
		"metrics": func() string { return *metricsSocket + "\n" },
	}
	if err := fs.Serve(c, root{files}); err != nil {
		fmt.Fprintln(os.Stderr, "fakemount: serve:", err)
		os.Exit(1)
	}
	c.Close()
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
