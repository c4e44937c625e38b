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
# What each part of the run took, printed when it ends however it ends.
parts=()
part_start=$SECONDS
part_done() {
	parts+=("$(printf '  %-40s %5ds' "$1" $((SECONDS - part_start)))")
	echo "e2e-cluster: $1 done in $((SECONDS - part_start))s"
	part_start=$SECONDS
}
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
	if [[ -n ${suite_started:-} ]]; then
		part_done "suite: setup, scenarios, teardown"
	fi
	echo "e2e-cluster: what took how long:"
	printf '%s\n' "${parts[@]}"
	echo "e2e-cluster: finished in $((SECONDS - start))s (exit $rc); logs in $logs"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "e2e-cluster: building (or finding cached) kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and csi-provisioner"
kube_bin=$(test/cluster/build-binaries.sh)
part_done "Kubernetes binaries and csi-provisioner"
echo "e2e-cluster: compiling the suite (go test -c -tags cluster ./test/cluster)"
go test -c -tags cluster -o "$work/cluster.test" ./test/cluster
part_done "suite compiled"
suite_started=1

# The test binary runs in the package directory, like go test.
cd "$repo/test/cluster"
COSMOUNT_E2E_WORKDIR="$work" COSMOUNT_E2E_LOGS="$logs" COSMOUNT_E2E_KUBE_BIN="$kube_bin" \
	"$work/cluster.test" -test.v -test.timeout "${E2E_TIMEOUT:-40m}" "$@"
