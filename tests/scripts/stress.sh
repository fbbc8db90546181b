#!/usr/bin/env bash
# stress.sh [N]: `make test` N times (default 5) under load.sh's load, one
# line per run, then "N passed, N failed" counting runs. Each run's full
# output is kept in $STRESS_LOGS (default: a new /tmp/procmgr-stress.* dir).
# Load figures are /proc/loadavg's 1-minute average, sampled every 5 s.
set -u
cd "$(dirname "$0")/../.."
n=${1:-5}
logs=${STRESS_LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/procmgr-stress.XXXXXX")}
mkdir -p "$logs"
make --no-print-directory build >/dev/null || exit 1

runs() {
	local ok=0 bad=0 i start secs summary verdict
	sampler() { while :; do cut -d' ' -f1 /proc/loadavg >>"$1"; sleep 5; done; }
	for i in $(seq 1 "$n"); do
		sampler "$logs/load-$i" &
		local sp=$!
		start=$(date +%s)
		if make --no-print-directory test >"$logs/run-$i.log" 2>&1; then
			verdict=passed
			ok=$((ok + 1))
		else
			verdict=FAILED
			bad=$((bad + 1))
		fi
		secs=$(($(date +%s) - start))
		kill "$sp" 2>/dev/null
		wait "$sp" 2>/dev/null
		summary=$(grep -E "^[0-9]+ passed, [0-9]+ failed$" "$logs/run-$i.log" | tail -n 1)
		load=$(sort -n "$logs/load-$i" | awk '{s+=$1; m=$1} END {if (NR) printf "load avg %.1f max %.1f", s/NR, m}')
		echo "run $i/$n: $verdict ($summary) in ${secs}s, $load, log $logs/run-$i.log"
	done
	echo "$ok passed, $bad failed"
	[ "$bad" -eq 0 ]
}

echo "stress: $n runs of make test under two CPU hogs and a neighbour procmgr session ($(nproc) CPUs)"
NEIGHBOUR_LOG=$logs/neighbour.log
. tests/scripts/load.sh # the load, removed when this script exits
runs
