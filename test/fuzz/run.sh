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

failed=()
for t in "${targets[@]}"; do
	read -r dir name <<<"$t"
	echo "fuzz: $name in $dir for $FUZZTIME"
	if ! "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$dir"; then
		failed+=("$name ($dir)")
	fi
done
echo "fuzz: ${#targets[@]} targets, ${#failed[@]} failed"
if [ "${#failed[@]}" -gt 0 ]; then
	printf 'fuzz: FAILED %s\n' "${failed[@]}" >&2
	exit 1
fi
