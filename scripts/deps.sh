#!/usr/bin/env bash
# Makes sure the Debian packages the build and tests need are installed.
#
# Sourced, it defines deps_ensure for scripts/test.sh and .ci/run. Run
# directly, it checks (and, as root, installs) the packages named as
# arguments, or the test packages when given none:
#
#   scripts/deps.sh                     # what `make test` needs
#   scripts/deps.sh make:make git:git   # package:command pairs
#
# A package counts as present when the command it provides is on PATH, so a
# tool installed some other way is accepted too. When something is missing,
# root with apt-get installs it; anyone else is told exactly what to run.

# DEPS_TEST lists, as package:command, what the tests need: yanglint checks
# the YANG modules; ip builds the network namespaces of the fault and lab
# tests; prometheus scrapes Telegraf in the collector chain's end-to-end
# test (TestTelegraf). DEPS_BPF is what regenerating the eBPF objects needs (make gen,
# make verify-gen): clang and libbpf's headers. A "command" that starts
# with / is a file that must exist.
DEPS_TEST=(libyang2-tools:yanglint iproute2:ip prometheus:prometheus)
DEPS_BPF=(clang:clang libbpf-dev:/usr/include/bpf/bpf_helpers.h)

# deps_have COMMAND-or-/FILE succeeds when the command is on PATH (or the
# file exists).
deps_have() {
	case "$1" in
	/*) [ -e "$1" ] ;;
	*) command -v "$1" >/dev/null 2>&1 ;;
	esac
}

# deps_ensure PACKAGE:COMMAND... installs the packages whose command is
# missing, or explains how to and returns 1.
deps_ensure() {
	local missing=() pair
	for pair in "$@"; do
		deps_have "${pair#*:}" || missing+=("${pair%%:*}")
	done
	[ ${#missing[@]} -eq 0 ] && return 0

	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "deps: installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -q || return 1
		apt-get install -y -q --no-install-recommends "${missing[@]}" || return 1
		for pair in "$@"; do
			if ! deps_have "${pair#*:}"; then
				echo "deps: ${pair%%:*} is installed but ${pair#*:} is still not on PATH" >&2
				return 1
			fi
		done
		return 0
	fi

	{
		echo "deps: missing Debian packages: ${missing[*]}"
		echo "deps: install them with:"
		echo "    sudo apt-get install -y --no-install-recommends ${missing[*]}"
		echo "deps: (run as root, this script installs them itself)"
	} >&2
	return 1
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -euo pipefail
	if [ $# -eq 0 ]; then
		set -- "${DEPS_TEST[@]}"
	fi
	deps_ensure "$@"
fi
