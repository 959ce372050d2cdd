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

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "test.sh: gofmt would change: $unformatted" >&2
	exit 1
fi
go vet ./...
go test -race -count=1 "$@" ./...
