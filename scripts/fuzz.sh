#!/usr/bin/env bash
# Runs every Fuzz target in the module for $FUZZTIME (default 10s) each
# (`make fuzz`). Targets are found with `go test -list '^Fuzz' ./...`; new
# crashers land in the package's testdata/fuzz/ and fail the run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fuzztime=${FUZZTIME:-10s}

# go test -list prints a package's matching test names, then one line
# "ok <package> <time>" for it.
if ! listing=$(go test -list '^Fuzz' ./... 2>&1); then
	printf '%s\n' "$listing" >&2
	echo "fuzz: listing the Fuzz targets failed" >&2
	exit 1
fi
targets=$(awk '
	/^Fuzz/ { names[n++] = $1; next }
	/^ok[ \t]/ { for (i = 0; i < n; i++) print $2, names[i]; n = 0 }
' <<<"$listing")

if [ -z "$targets" ]; then
	echo "fuzz: no Fuzz targets found"
	exit 0
fi

count=$(wc -l <<<"$targets")
echo "fuzz: $count target(s), $fuzztime each"
# Go 1.26's fuzz coordinator can fail a target with a bare "context
# deadline exceeded" as -fuzztime ends, having found nothing (a race between
# its timeout context and the workers' child context: go.dev/issue/75804,
# fixed in Go 1.27). Such a run writes no failing input; it is run again, at
# most twice. Any run that wrote a failing input fails at once.
out=$(mktemp)
trap 'rm -f "$out"' EXIT
while read -r pkg name; do
	for attempt in 1 2 3; do
		printf '\n==> %s %s\n' "$pkg" "$name"
		if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" 2>&1 | tee "$out"; [ "${PIPESTATUS[0]}" -eq 0 ]; then
			break
		fi
		if [ "$attempt" -lt 3 ] && grep -q 'context deadline exceeded' "$out" && ! grep -q 'Failing input written to' "$out"; then
			echo "fuzz: $name stopped on the coordinator's deadline race (go.dev/issue/75804), found nothing; running it again"
			continue
		fi
		exit 1
	done
done <<<"$targets"
