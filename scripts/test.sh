#!/usr/bin/env bash
# The test command (`make test`): installs or names the Debian packages the
# tests need, checks the YANG modules with yanglint, then runs every Go test.
#
# Extra `go test` flags come from $GOTEST_FLAGS and from this script's
# arguments, e.g. `GOTEST_FLAGS=-v make test` or `scripts/test.sh -run TestSet`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/deps.sh
. scripts/deps.sh

section() { printf '\n==> %s\n' "$*"; }

section "Debian packages: ${DEPS_TEST[*]%%:*}"
deps_ensure "${DEPS_TEST[@]}"
echo "ok"

section "yanglint -p yang yang/*.yang"
if ! out=$(yanglint -p yang yang/*.yang 2>&1) || [ -n "$out" ]; then
	printf '%s\n' "$out"
	echo "yanglint: the YANG modules must validate without errors or warnings" >&2
	exit 1
fi
echo "ok"

# shellcheck disable=SC2086 # GOTEST_FLAGS is a list of flags
set -- -count=1 -timeout 20m ${GOTEST_FLAGS:-} "$@" ./...
section "go test $*"
exec go test "$@"
