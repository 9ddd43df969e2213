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
while read -r pkg name; do
	printf '\n==> %s %s\n' "$pkg" "$name"
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg"
done <<<"$targets"
