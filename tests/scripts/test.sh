#!/usr/bin/env bash
# `make test`: lint, build, the Go tests (unit and end to end, under the race
# detector) and the Python client's tests. Every part runs whatever happened
# to the others, and the last line is "N passed, N failed" over both suites
# (a failed lint or build counts as one failed). Exits 1 if anything failed.
set -u
cd "$(dirname "$0")/../.."
GO=${GO:-go}
BIN=$PWD/bin/procmgr
tmp=$(mktemp -d "${TMPDIR:-/tmp}/procmgr-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

passed=0
failed=0
add() { # add FILE: adds its "passed failed" counts; a missing file is one failure
	if [ -s "$1" ]; then
		read -r p f <"$1"
		passed=$((passed + p))
		failed=$((failed + f))
	else
		failed=$((failed + 1))
	fi
}

echo "== lint"
if ! make --no-print-directory lint; then
	echo "lint: FAILED"
	failed=$((failed + 1))
fi

echo "== build"
if ! make --no-print-directory build; then
	echo "build: FAILED (the tests below run against no binary)"
	failed=$((failed + 1))
fi

echo "== Go tests (go test -race ./...)"
PROCMGR_BIN=$BIN $GO test -race -count=1 -timeout 8m -json ./... 2>&1 |
	python3 tests/scripts/gojson.py "$tmp/go.counts"
gostatus=${PIPESTATUS[0]}
add "$tmp/go.counts"
if [ "$gostatus" -ne 0 ] && [ -s "$tmp/go.counts" ] && [ "$(cut -d' ' -f2 "$tmp/go.counts")" = 0 ]; then
	echo "go test exited $gostatus with no failure counted"
	failed=$((failed + 1))
fi
read -r gp gf <"$tmp/go.counts" 2>/dev/null || { gp=0; gf=1; }
echo "Go: $gp passed, $gf failed"

echo "== Python tests"
PYTHONPATH=$PWD/clients/python PROCMGR_BIN=$BIN python3 tests/scripts/pyunit.py "$tmp/py.counts"
add "$tmp/py.counts"
read -r pp pf <"$tmp/py.counts" 2>/dev/null || { pp=0; pf=1; }
echo "Python: $pp passed, $pf failed"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
