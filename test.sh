#!/usr/bin/env bash
# Runs the whole test suite: formatting and vet, unit tests, integration
# tests against a real Caddy on loopback, and the seeds of every fuzz
# target, with the race detector. It installs what it needs when missing.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v go >/dev/null 2>&1; then
	echo "test.sh: Go is needed (https://go.dev/dl/)" >&2
	exit 1
fi

# Tests start their own redis-server on a free loopback port.
if ! command -v redis-server >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "test.sh: installing redis-server" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
		# The package may start a server of its own; the tests do not use it.
		command -v service >/dev/null 2>&1 && service redis-server stop >/dev/null 2>&1 || true
	else
		echo "test.sh: redis-server is missing; install it (apt-get install redis-server)" >&2
		[ "${CI:-}" = true ] && exit 1
	fi
fi

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "test.sh: gofmt would change: $unformatted" >&2
	exit 1
fi
go vet ./...
go test -race -count=1 "$@" ./...
