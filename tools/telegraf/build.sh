#!/usr/bin/env bash
# Builds Telegraf (the version in go.mod) with only the plugins that
# deploy/telegraf/telegraf.conf uses, into the file named by $1:
#
#   tools/telegraf/build.sh bin/telegraf
#
# `make telegraf` and cmd/patronusd's TestTelegraf both build it this way.
# "custom" leaves out every plugin not named by its own tag.
set -euo pipefail
if [ $# -ne 1 ]; then
	echo "usage: $0 OUTPUT" >&2
	exit 2
fi
out=$(realpath -m "$1")
cd "$(dirname "${BASH_SOURCE[0]}")"
version=$(go list -m -f '{{.Version}}' github.com/influxdata/telegraf)
exec go build -tags custom,inputs.gnmi,outputs.prometheus_client,outputs.file \
	-ldflags "-X github.com/influxdata/telegraf/internal.Version=${version#v}" \
	-o "$out" github.com/influxdata/telegraf/cmd/telegraf
