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

# version_of DIR MODULE prints the version of MODULE the wrapper module DIR pins.
version_of() {
	awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/tools/$1/go.mod"
}

# build DIR WHAT LDFLAGS PKG... builds the packages whose binary is missing
# from $out. Each binary is written next to its final place and renamed, so
# an interrupted build never leaves a truncated binary that looks complete.
# It says what it builds, keeps saying so while a cold build runs (minutes
# of silence otherwise), and how long it took.
build() {
	local dir=$1 what=$2 ldflags=$3 pkg missing=() start=$SECONDS
	shift 3
	for pkg in "$@"; do
		[[ -x "$out/${pkg##*/}" ]] || missing+=("$pkg")
	done
	if ((${#missing[@]} == 0)); then
		log "cached: ${*##*/} ($what)"
		return 0
	fi
	local tmp beat rc=0
	tmp=$(mktemp -d "$out/.build.XXXXXX")
	log "building ${missing[*]##*/} ($what, module tools/$dir); a cold build takes minutes, GOCACHE makes later ones quick"
	(while sleep 60; do log "still building ${missing[*]##*/} after $((SECONDS - start))s"; done) &
	beat=$!
	(cd "$here/tools/$dir" && "$go" build -trimpath -ldflags "$ldflags" -o "$tmp/" "${missing[@]}") || rc=$?
	kill "$beat" 2>/dev/null
	wait "$beat" 2>/dev/null || true
	if ((rc != 0)); then
		rm -rf "$tmp"
		log "building ${missing[*]##*/} failed after $((SECONDS - start))s"
		return 1
	fi
	for pkg in "${missing[@]}"; do mv "$tmp/${pkg##*/}" "$out/"; done
	rm -rf "$tmp"
	log "built ${missing[*]##*/} in $((SECONDS - start))s"
}

# Version stamps so kubelet and kube-apiserver report what they are; without
# them they call themselves v0.0.0-master.
kv=k8s.io/component-base/version
log "cache $out (key from tools/*/go.mod, go.sum and $("$go" env GOVERSION))"
build kubernetes "Kubernetes $(version_of kubernetes k8s.io/kubernetes)" \
	"-s -w -X $kv.gitVersion=v1.37.2 -X $kv.gitMajor=1 -X $kv.gitMinor=37 -X $kv.gitTreeState=clean" \
	k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kube-scheduler \
	k8s.io/kubernetes/cmd/kubelet
build provisioner "external-provisioner $(version_of provisioner github.com/kubernetes-csi/external-provisioner/v6)" \
	"-s -w -X main.version=v6.4.0" \
	github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner
echo "$out"
