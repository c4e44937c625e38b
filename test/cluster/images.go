//go:build cluster

package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/cosmount/cosmount/test/cluster/ociimage"
)

// WorkloadImage is the busybox image the scenarios' pods run.
const WorkloadImage = "cosmount-e2e/busybox:1"

// NextPluginImage is the plugin image under a second tag, the "new
// version" a rolling update of the node plugin moves to.
const NextPluginImage = "cosmount:e2e-next"

// ImageSources are the local files the suite's images are made of.
type ImageSources struct {
	Busybox     string // a static busybox (Debian's busybox-static)
	Fusermount  string // the host's fusermount3, copied in with its libraries
	ProductBin  string // cosmount and cosmount-csi, built static
	Sidecars    string // the stand-in registrar / livenessprobe binary
	Provisioner string // csi-provisioner
}

// ImageNames are the references the deploy manifests use, per role.
type ImageNames struct {
	Plugin, Registrar, LivenessProbe, Provisioner []string
}

// BuildAndImportImages writes an OCI archive per image into dir and
// imports each into containerd under the names the manifests ask for.
func (c *Cluster) BuildAndImportImages(ctx context.Context, dir string, src ImageSources, names ImageNames) error {
	busybox, err := ociimage.BusyboxRoot(src.Busybox)
	if err != nil {
		return err
	}
	fusermount, err := ociimage.HostBinary(src.Fusermount, "/usr/bin/fusermount3", 0o4755)
	if err != nil {
		return err
	}
	plugin := append(append([]ociimage.File(nil), busybox...), fusermount...)
	plugin = append(plugin,
		ociimage.File{Path: "/usr/local/bin/cosmount-csi", Source: filepath.Join(src.ProductBin, "cosmount-csi"), Mode: 0o755},
		ociimage.File{Path: "/usr/local/bin/cosmount", Source: filepath.Join(src.ProductBin, "cosmount"), Mode: 0o755},
	)
	single := func(path, source string) []ociimage.File {
		return []ociimage.File{{Path: path, Source: source, Mode: 0o755}, {Path: "/tmp", Dir: true, Mode: 0o1777}}
	}
	images := []ociimage.Image{
		{Names: []string{WorkloadImage}, Files: busybox, Cmd: []string{"sh"}},
		// The sandbox only holds the pod's namespaces; kubelet stops it with SIGKILL.
		{Names: []string{PauseImage}, Files: busybox, Entrypoint: []string{"/bin/sleep", "2147483647"}},
		{Names: names.Plugin, Files: plugin},
		// A distinct image (another digest), as a new release would be.
		{Names: []string{NextPluginImage}, Files: append(append([]ociimage.File(nil), plugin...),
			ociimage.File{Path: "/etc/cosmount-e2e-release", Data: []byte("next\n"), Mode: 0o644})},
		{Names: names.Registrar, Files: single("/csi-node-driver-registrar", src.Sidecars), Entrypoint: []string{"/csi-node-driver-registrar"}},
		{Names: names.LivenessProbe, Files: single("/livenessprobe", src.Sidecars), Entrypoint: []string{"/livenessprobe"}},
		{Names: names.Provisioner, Files: single("/csi-provisioner", src.Provisioner), Entrypoint: []string{"/csi-provisioner"}},
	}
	for i, img := range images {
		if len(img.Names) == 0 {
			continue
		}
		for j, n := range img.Names {
			img.Names[j] = normalizeImageName(n)
		}
		archive := filepath.Join(dir, fmt.Sprintf("image-%d.tar", i))
		if err := ociimage.WriteFile(archive, img); err != nil {
			return err
		}
		if err := c.ImportImage(ctx, archive); err != nil {
			return err
		}
		logStep("imported image %s", strings.Join(img.Names, ", "))
	}
	return nil
}

// normalizeImageName spells a reference the way the CRI looks it up:
// "cosmount:0.1.0" is "docker.io/library/cosmount:0.1.0" to containerd, and
// an image imported under the short name would never be found.
func normalizeImageName(name string) string {
	first, _, hasSlash := strings.Cut(name, "/")
	if hasSlash && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return name
	}
	if !hasSlash {
		name = "library/" + name
	}
	return "docker.io/" + name
}
