#!/usr/bin/env bash
# fuzz.sh: runs every Go fuzz target of the module, one after the other, each
# for $FUZZTIME (default 2m). Targets are found with `go test -list '^Fuzz'`
# per package, so new ones are picked up without editing this. New
# interesting inputs go to Go's cache; a crasher is written to the package's
# testdata/fuzz/<Target>/ and fails the run. Ends with "N passed, N failed"
# counting targets.
set -u
cd "$(dirname "$0")/../.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-2m}
make --no-print-directory build >/dev/null || exit 1
export PROCMGR_BIN=$PWD/bin/procmgr # tests/ builds none then
ok=0
bad=0
# Only packages whose tests mention a fuzz function are asked (asking means
# building the test binary); go test -list then names the targets.
for pkg in $($GO list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}} {{.Dir}}{{end}}' ./... | while read -r p d; do
	grep -qs 'func Fuzz' "$d"/*_test.go && echo "$p"
done); do
	targets=$($GO test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz') || continue
	for t in $targets; do
		echo "== $pkg $t for $FUZZTIME"
		if $GO test -run '^$' -fuzz "^$t\$" -fuzztime "$FUZZTIME" "$pkg"; then
			ok=$((ok + 1))
		else
			echo "$pkg $t: FAILED"
			bad=$((bad + 1))
		fi
	done
done
echo "$ok passed, $bad failed"
[ "$bad" -eq 0 ]
