#!/usr/bin/env bash
# Runs the Kubernetes node suite: `make e2e-cluster`. It builds the pinned
# binaries (cached), compiles the suite, and runs it in a throwaway
# directory. The trap runs the suite's teardown in a fresh process on any
# exit, so a crash or a go test timeout still leaves no process, mount or
# cgroup behind. Extra arguments go to the test binary (e.g. -test.run).
set -euo pipefail

cd "$(dirname "$0")/../.."
repo=$(pwd)
export GOFLAGS=-mod=mod

[[ $(id -u) == 0 ]] || { echo "e2e-cluster: must run as root (kubelet, containerd, FUSE)" >&2; exit 1; }

start=$SECONDS
work=$(mktemp -d /var/tmp/cosmount-e2e.XXXXXX)
logs="$work-logs"
mkdir -p "$logs"
echo "e2e-cluster: work directory $work, logs in $logs"

cleanup() {
	local rc=$?
	if [[ -x "$work/cluster.test" ]]; then
		COSMOUNT_E2E_TEARDOWN_ONLY=1 COSMOUNT_E2E_WORKDIR="$work" "$work/cluster.test" || rc=1
		# The trap ran cluster.test from inside work; remove what is left.
		if [[ -d "$work" ]] && ! grep -q " $work" /proc/self/mountinfo; then rm -rf "$work"; fi
	elif [[ -d "$work" ]]; then
		rm -rf "$work"
	fi
	echo "e2e-cluster: finished in $((SECONDS - start))s (exit $rc); logs in $logs"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

kube_bin=$(test/cluster/build-binaries.sh)
echo "e2e-cluster: Kubernetes binaries ready after $((SECONDS - start))s"
go test -c -tags cluster -o "$work/cluster.test" ./test/cluster
echo "e2e-cluster: suite compiled after $((SECONDS - start))s"

# The test binary runs in the package directory, like go test.
cd "$repo/test/cluster"
COSMOUNT_E2E_WORKDIR="$work" COSMOUNT_E2E_LOGS="$logs" COSMOUNT_E2E_KUBE_BIN="$kube_bin" \
	"$work/cluster.test" -test.v -test.timeout "${E2E_TIMEOUT:-40m}" "$@"
