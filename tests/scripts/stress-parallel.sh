#!/usr/bin/env bash
# stress-parallel.sh [ROUNDS]: clones the current HEAD twice into a temporary
# directory and runs `make test` in both clones at once, ROUNDS times
# (default 3): two sessions' suites side by side, as on a shared CI host.
# One line per run, then "N passed, N failed" counting runs. The clones are
# removed at the end (logs are kept in $STRESS_LOGS, default a new
# /tmp/procmgr-stress-parallel.* directory).
set -u
cd "$(dirname "$0")/../.."
rounds=${1:-3}
logs=${STRESS_LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/procmgr-stress-parallel.XXXXXX")}
mkdir -p "$logs"
work=$(mktemp -d "${TMPDIR:-/tmp}/procmgr-clones.XXXXXX")
kids=()
cleanup() {
	trap - EXIT INT TERM HUP
	[ ${#kids[@]} -gt 0 ] && kill "${kids[@]}" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

head=$(git rev-parse HEAD)
for c in a b; do
	git clone -q --no-checkout "$PWD" "$work/$c" && git -C "$work/$c" checkout -q --detach "$head" || exit 1
done
echo "stress-parallel: $rounds rounds of make test in two clones of $(git rev-parse --short HEAD) at once ($(nproc) CPUs)"
ok=0
bad=0
for r in $(seq 1 "$rounds"); do
	kids=()
	start=$(date +%s)
	for c in a b; do
		make --no-print-directory -C "$work/$c" test >"$logs/round-$r-$c.log" 2>&1 &
		kids+=($!)
	done
	maxload=0
	while [ -n "$(jobs -rp)" ]; do
		l=$(cut -d' ' -f1 /proc/loadavg)
		maxload=$(awk -v a="$l" -v b="$maxload" 'BEGIN {print (a > b) ? a : b}')
		sleep 5
	done
	i=0
	for c in a b; do
		if wait "${kids[$i]}"; then verdict=passed; ok=$((ok + 1)); else verdict=FAILED; bad=$((bad + 1)); fi
		i=$((i + 1))
		echo "round $r/$rounds clone $c: $verdict ($(grep -E "^[0-9]+ passed, [0-9]+ failed$" "$logs/round-$r-$c.log" | tail -n 1)) in $(($(date +%s) - start))s, max load $maxload, log $logs/round-$r-$c.log"
	done
	kids=()
done
echo "$ok passed, $bad failed"
[ "$bad" -eq 0 ]
