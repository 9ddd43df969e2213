#!/usr/bin/env bash
# Lints the module (`make lint`): gofmt, go vet and staticcheck. Generated
# code under gen/ is left to its generator: gofmt and staticcheck skip it.
# Every check runs even if an earlier one fails, so one run shows everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

staticcheck=${STATICCHECK:-honnef.co/go/tools/cmd/staticcheck@v0.8.2}
failed=()

printf '==> gofmt -l (all .go files outside gen/)\n'
# Tracked files plus new ones not yet added (ignored ones excepted), so a
# change is checked before it is committed; files deleted in the work tree
# are skipped.
files=()
while IFS= read -r -d '' f; do
	if [ -f "$f" ]; then files+=("$f"); fi
done < <(git ls-files -z --cached --others --exclude-standard -- '*.go' ':!:gen/')
if [ ${#files[@]} -gt 0 ]; then
	if ! unformatted=$(gofmt -l "${files[@]}") || [ -n "$unformatted" ]; then
		printf '%s\n' "$unformatted"
		echo "gofmt: run gofmt -w on the files above" >&2
		failed+=(gofmt)
	fi
fi

printf '==> go vet ./...\n'
go vet ./... || failed+=(vet)

printf '==> staticcheck (%s), all packages outside gen/\n' "${staticcheck#*@}"
module=$(go list -m)
# -e: list packages that do not build too, so staticcheck reports why.
pkgs=$(go list -e ./... | grep -Ev "^${module}/gen(/|\$)")
# shellcheck disable=SC2086 # one argument per package
go run "$staticcheck" $pkgs || failed+=(staticcheck)

if [ ${#failed[@]} -gt 0 ]; then
	echo "lint: FAIL: ${failed[*]}" >&2
	exit 1
fi
echo "lint: ok"
