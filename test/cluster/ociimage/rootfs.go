package ociimage

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BusyboxRoot returns a minimal root filesystem around a static busybox:
// the binary, a symlink for every applet it lists, /etc/passwd and
// /etc/group with root and nobody, and the usual empty directories.
func BusyboxRoot(busybox string) ([]File, error) {
	out, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("ociimage: %s --list-full: %w", busybox, err)
	}
	files := []File{
		{Path: "/bin/busybox", Source: busybox, Mode: 0o755},
		{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"), Mode: 0o644},
		{Path: "/etc/group", Data: []byte("root:x:0:\nnogroup:x:65534:\n"), Mode: 0o644},
		{Path: "/tmp", Dir: true, Mode: 0o777 | os.ModeSticky},
		{Path: "/root", Dir: true, Mode: 0o700},
	}
	for _, d := range []string{"/proc", "/sys", "/dev", "/run", "/var", "/etc"} {
		files = append(files, File{Path: d, Dir: true, Mode: 0o755})
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		applet := "/" + strings.TrimSpace(sc.Text())
		if applet == "/" || applet == "/bin/busybox" {
			continue
		}
		files = append(files, File{Path: applet, Link: "/bin/busybox"})
	}
	return files, sc.Err()
}

// HostBinary returns a host executable placed at dest inside the image,
// together with the shared libraries ldd says it loads (each at the path the
// loader looks for it, symlinks resolved). Static binaries come alone.
func HostBinary(bin, dest string, mode os.FileMode) ([]File, error) {
	files := []File{{Path: dest, Source: bin, Mode: mode}}
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		// ldd exits non-zero for static executables.
		if strings.Contains(string(out), "not a dynamic executable") || strings.Contains(string(out), "statically linked") {
			return files, nil
		}
		return nil, fmt.Errorf("ociimage: ldd %s: %v: %s", bin, err, out)
	}
	for _, lib := range parseLdd(string(out)) {
		real, err := filepath.EvalSymlinks(lib)
		if err != nil {
			return nil, fmt.Errorf("ociimage: library of %s: %w", bin, err)
		}
		files = append(files, File{Path: lib, Source: real, Mode: 0o755})
	}
	return files, nil
}

// parseLdd extracts the library paths from ldd output lines such as
// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and
// "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no file.
func parseLdd(out string) []string {
	var libs []string
	for _, line := range strings.Split(out, "\n") {
		fields := strings.Fields(line)
		switch {
		case len(fields) >= 3 && fields[1] == "=>" && strings.HasPrefix(fields[2], "/"):
			libs = append(libs, fields[2])
		case len(fields) >= 1 && strings.HasPrefix(fields[0], "/"):
			libs = append(libs, fields[0])
		}
	}
	return libs
}
