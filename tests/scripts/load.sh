#!/usr/bin/env bash
# load.sh COMMAND [ARGS...]: runs COMMAND under the load `make stress` uses —
# two CPU-bound loops and a neighbour procmgr session creating and stopping
# process trees (neighbour.py) — and removes all of it afterwards, however
# COMMAND ends (Ctrl-C included). Exits with COMMAND's status. Sourced (from
# the repository root) instead, it starts the load and removes it when the
# sourcing script exits.
#
# The neighbour runs its own copy of bin/procmgr, so that a `make build`
# under test may replace the binary. Its stderr goes to $NEIGHBOUR_LOG
# (default: discarded).
set -u
if [ "${BASH_SOURCE[0]}" = "$0" ]; then cd "$(dirname "$0")/../.."; fi
[ -x bin/procmgr ] || make --no-print-directory build >/dev/null || exit 1

tmp=$(mktemp -d "${TMPDIR:-/tmp}/procmgr-load.XXXXXX")
cp bin/procmgr "$tmp/procmgr"
hogs=()
neighbour=
cleanup() {
	trap - EXIT INT TERM HUP
	[ ${#hogs[@]} -gt 0 ] && kill "${hogs[@]}" 2>/dev/null
	if [ -n "$neighbour" ]; then
		kill -TERM "$neighbour" 2>/dev/null # it shuts its session down and exits
		for _ in $(seq 1 200); do
			kill -0 "$neighbour" 2>/dev/null || break
			sleep 0.1
		done
		# Still there after 20 s: SIGKILL it; its sidecar then ends its tools.
		kill -KILL "$neighbour" 2>/dev/null
	fi
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

for _ in 1 2; do
	sh -c 'while :; do :; done' &
	hogs+=($!)
done
PYTHONPATH=$PWD/clients/python PROCMGR_BIN=$tmp/procmgr \
	python3 tests/scripts/neighbour.py 2>>"${NEIGHBOUR_LOG:-/dev/null}" &
neighbour=$!

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	"$@"
fi
