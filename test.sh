#!/usr/bin/env bash
# Runs the whole test suite: formatting and vet, unit tests, integration
# tests against a real Caddy on loopback, the README's walkthrough, a real
# browser against the production example, and the seeds of every fuzz
# target, with the race detector. It installs what it needs when missing,
# says which stage it is in, and ends with one line of totals. Arguments
# go to go test (./test.sh -run TestWalkthrough).
set -euo pipefail
cd "$(dirname "$0")"

stage() { printf '==> [%d:%02d] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

if ! command -v go >/dev/null 2>&1; then
	echo "test.sh: Go is needed (https://go.dev/dl/)" >&2
	exit 1
fi

# The tests start their own redis-server on a free loopback port, follow
# the README's walkthrough with curl, and drive headless Chromium against
# the production example.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ((${#missing[@]})); then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		stage "installing ${missing[*]} with apt-get"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
		# The package may start a server of its own; the tests do not use it.
		command -v service >/dev/null 2>&1 && service redis-server stop >/dev/null 2>&1 || true
	else
		echo "test.sh: ${missing[*]} missing; install (apt-get install ${missing[*]})" >&2
		[ "${CI:-}" = true ] && exit 1
	fi
fi

stage "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "test.sh: gofmt would change: $unformatted" >&2
	exit 1
fi

# Vet compiles every package as the Caddy build below does, which then
# only links. The race-enabled tests compile their packages once more with
# -race: a race-enabled Caddy would spare that, but it runs the
# integration tests three times slower, and its sync.Pool, which the race
# detector empties at random, changes how ristretto admits entries.
stage "go vet (a first run compiles Caddy and its dependencies: a few minutes)"
go vet ./...

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
stage "building Caddy with our modules, for the integration tests"
go build -o "$tmp/caddy" ./cmd/caddy
go build -o "$tmp/testreport" ./internal/testreport

stage "compiling the tested packages with -race"
go build -race $(go list ./... | grep -v '/cmd/caddy$')

stage "go test -race: each package as it starts and ends, the output of any test that fails"
GATEWAY_TEST_CADDY="$tmp/caddy" go test -race -count=1 -json "$@" ./... | "$tmp/testreport"
stage "done"
