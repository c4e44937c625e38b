#!/usr/bin/env bash
# Builds the pinned third-party binaries the cluster suite runs (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, csi-provisioner) from the
# wrapper modules in tools/, through the Go module proxy only. The results land
# in a cache directory keyed by the wrapper modules and the Go version, so a
# warm run skips the build entirely; GOCACHE is the caller's, so a rebuild
# after a version bump reuses most compiled packages.
#
# Usage: build-binaries.sh            prints the directory holding the binaries
# Env:   COSMOUNT_E2E_CACHE           cache root (default /var/cache/cosmount-e2e)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${COSMOUNT_E2E_CACHE:-/var/cache/cosmount-e2e}
go=${GO:-go}

# The key changes whenever a pinned version or the toolchain does.
key=$( { cat "$here"/tools/kubernetes/go.mod "$here"/tools/kubernetes/go.sum \
	"$here"/tools/provisioner/go.mod "$here"/tools/provisioner/go.sum; \
	"$go" version; } | sha256sum | cut -c1-16)
out="$cache/bin/$key"
mkdir -p "$out"

log() { echo "build-binaries: $*" >&2; }
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOWORK=off

# build DIR LDFLAGS PKG... builds the packages whose binary is missing from
# $out. Each binary is written next to its final place and renamed, so an
# interrupted build never leaves a truncated binary that looks complete.
build() {
	local dir=$1 ldflags=$2 pkg missing=() start=$SECONDS
	shift 2
	for pkg in "$@"; do
		[[ -x "$out/${pkg##*/}" ]] || missing+=("$pkg")
	done
	((${#missing[@]})) || return 0
	local tmp
	tmp=$(mktemp -d "$out/.build.XXXXXX")
	log "building ${missing[*]##*/} in $dir"
	(cd "$here/tools/$dir" && "$go" build -trimpath -ldflags "$ldflags" -o "$tmp/" "${missing[@]}") || {
		rm -rf "$tmp"
		return 1
	}
	for pkg in "${missing[@]}"; do mv "$tmp/${pkg##*/}" "$out/"; done
	rm -rf "$tmp"
	log "built ${missing[*]##*/} in $((SECONDS - start))s"
}

# Version stamps so kubelet and kube-apiserver report what they are; without
# them they call themselves v0.0.0-master.
kv=k8s.io/component-base/version
build kubernetes "-s -w -X $kv.gitVersion=v1.37.2 -X $kv.gitMajor=1 -X $kv.gitMinor=37 -X $kv.gitTreeState=clean" \
	k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kube-scheduler \
	k8s.io/kubernetes/cmd/kubelet
build provisioner "-s -w -X main.version=v6.4.0" \
	github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner
echo "$out"
