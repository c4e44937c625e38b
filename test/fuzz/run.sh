#!/usr/bin/env bash
# Runs every Go native fuzz target of the module (every `func FuzzXxx(f
# *testing.F)` in a _test.go file, found anew on each run, so new targets are
# picked up without a list to keep) for FUZZTIME each (default 10s).
#
#   test/fuzz/run.sh            # all targets
#   FUZZTIME=5m test/fuzz/run.sh  # longer
#   test/fuzz/run.sh -list      # only print the targets
#   FUZZ_MATCH=Mount test/fuzz/run.sh   # targets whose name contains Mount
#
# A target that fails leaves its input in the package's testdata/fuzz/, where
# `go test` replays it from then on. Exit status: non-zero if any target failed
# or none was found.
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-10s}
MATCH=${FUZZ_MATCH:-}

targets=()
while IFS= read -r file; do
	dir=./$(dirname "${file#./}")
	while IFS= read -r name; do
		[ -n "$name" ] || continue
		case "$name" in *"$MATCH"*) targets+=("$dir $name") ;; esac
	done < <(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(\([a-z][A-Za-z0-9_]*\) \*testing\.F).*/\1/p' "$file")
done < <(find . -name '*_test.go' -not -path '*/testdata/*' -not -path './_output/*' | sort)

if [ "${#targets[@]}" -eq 0 ]; then
	echo "fuzz: no fuzz target found${MATCH:+ matching $MATCH}" >&2
	exit 1
fi
if [ "${1:-}" = "-list" ]; then
	printf '%s\n' "${targets[@]}"
	exit 0
fi

# fuzz_once runs one target and prints its output; its exit status is go
# test's.
fuzz_once() {
	"$GO" test -run '^$' -fuzz "^$2\$" -fuzztime "$FUZZTIME" "$1" 2>&1 | tee "$log"
	return "${PIPESTATUS[0]}"
}

# bare_deadline: the run failed only with a bare "context deadline exceeded"
# at the end of -fuzztime and found nothing: the coordinator's shutdown race
# of Go before 1.27 (go.dev/issue/75804) on a loaded machine, not a finding.
# A finding always writes its input ("Failing input written to").
bare_deadline() {
	grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written to\|panic:\|_test.go:[0-9]*:' "$log"
}

log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=()
flaked=()
for t in "${targets[@]}"; do
	read -r dir name <<<"$t"
	echo "fuzz: $name in $dir for $FUZZTIME"
	if fuzz_once "$dir" "$name"; then
		continue
	fi
	if bare_deadline; then
		echo "fuzz: $name ended with the fuzz coordinator's deadline race (nothing found); running it again"
		if fuzz_once "$dir" "$name"; then
			continue
		fi
		# Twice the race and never a finding: the corpus replay decides.
		if bare_deadline && "$GO" test -run "^${name}\$" "$dir"; then
			flaked+=("$name ($dir)")
			continue
		fi
	fi
	failed+=("$name ($dir)")
done
echo "fuzz: ${#targets[@]} targets, ${#failed[@]} failed${flaked:+, ${#flaked[@]} cut short by the deadline race twice (corpus replay passed)}"
if [ "${#failed[@]}" -gt 0 ]; then
	printf 'fuzz: FAILED %s\n' "${failed[@]}" >&2
	exit 1
fi
