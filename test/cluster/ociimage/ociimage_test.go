package ociimage

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func readTar(t *testing.T, r io.Reader) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		key := h.Name
		if h.Typeflag == tar.TypeSymlink {
			b = []byte("-> " + h.Linkname)
		}
		out[key] = b
	}
}

func TestWriteLayout(t *testing.T) {
	src := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(src, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := Image{
		Names:      []string{"example.test/a:v1", "example.test/pause:3.10"},
		Entrypoint: []string{"/usr/bin/tool"},
		Files: []File{
			{Path: "/usr/bin/tool", Source: src, Mode: 0o755},
			{Path: "/bin/sh", Link: "/bin/busybox"},
			{Path: "/etc/hostname", Data: []byte("x\n")},
		},
	}
	var buf bytes.Buffer
	if err := Write(&buf, img); err != nil {
		t.Fatal(err)
	}
	archive := bytes.Clone(buf.Bytes())
	files := readTar(t, &buf)
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range index.Manifests {
		names = append(names, m.Annotations["io.containerd.image.name"])
		if _, ok := files[blobPath(m.Digest)]; !ok {
			t.Fatalf("manifest blob %s missing", m.Digest)
		}
	}
	if !reflect.DeepEqual(names, img.Names) {
		t.Fatalf("names = %v, want %v", names, img.Names)
	}
	var manifest struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(files[blobPath(index.Manifests[0].Digest)], &manifest); err != nil {
		t.Fatal(err)
	}
	layer := files[blobPath(manifest.Layers[0].Digest)]
	if digest(layer) != manifest.Layers[0].Digest || int64(len(layer)) != manifest.Layers[0].Size {
		t.Fatal("layer digest or size does not match its descriptor")
	}
	var config struct {
		Config struct{ Entrypoint []string } `json:"config"`
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(files[blobPath(manifest.Config.Digest)], &config); err != nil {
		t.Fatal(err)
	}
	if config.RootFS.DiffIDs[0] != manifest.Layers[0].Digest || config.Config.Entrypoint[0] != "/usr/bin/tool" {
		t.Fatalf("config = %+v", config)
	}
	root := readTar(t, bytes.NewReader(layer))
	want := map[string]string{
		"usr/":         "",
		"usr/bin/":     "",
		"usr/bin/tool": "#!/bin/sh\necho hi\n",
		"bin/":         "",
		"bin/sh":       "-> /bin/busybox",
		"etc/":         "",
		"etc/hostname": "x\n",
	}
	got := map[string]string{}
	for k, v := range root {
		got[k] = string(v)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("layer = %v, want %v", got, want)
	}

	// The same input gives the same archive, so re-imports are no-ops.
	var again bytes.Buffer
	if err := Write(&again, img); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Bytes(), archive) {
		t.Fatal("archive is not reproducible")
	}
}

func TestParseLdd(t *testing.T) {
	out := "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n"
	got := parseLdd(out)
	want := []string{"/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parseLdd = %v, want %v", got, want)
	}
}

func TestWriteNeedsName(t *testing.T) {
	if err := Write(io.Discard, Image{}); err == nil || !strings.Contains(err.Error(), "no name") {
		t.Fatalf("err = %v", err)
	}
}
