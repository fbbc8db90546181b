"""Host processes for the benchmarks, each run as its own Python process.

    python3 bench/hosts.py spawn   --binary B --mib M --argv /bin/true --reps N --slow-reps K
        A host holding M MiB of touched memory (0: a small host) times
        subprocess.Popen(argv), Popen(argv, preexec_fn=os.setpgrp) and the
        sidecar's create of the same argv, interleaved, and prints one JSON
        object with the durations in seconds.

    python3 bench/hosts.py cleanup --mode procmgr|casa --binary B --tools N
        A host that starts N tools (half of them `sh -c 'sleep 600 & wait'`,
        which have a grandchild), prints one JSON line "ready" and then waits
        to be SIGKILLed by the bench. procmgr mode starts them through the
        Python client; casa mode re-creates CASA 5's procmgr: plain Popen plus
        one bash watchdog per tool polling `kill -0 <host>` once a second, then
        SIGTERM, 0.5 s, SIGKILL to the direct child only.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "clients", "python"))

# CASA 5's per-tool watchdog, as design.md describes it: poll the host with
# kill -0 once a second; when it is gone, SIGTERM the tool, wait 0.5 s, SIGKILL.
# Only the direct child is signalled: CASA used no process groups.
CASA_WATCHDOG = (
    'while kill -0 "$1" 2>/dev/null; do sleep 1; done; '
    'kill -TERM "$2" 2>/dev/null; sleep 0.5; kill -KILL "$2" 2>/dev/null'
)

GRANDCHILD_TOOL = ["sh", "-c", "sleep 600 & wait"]
PLAIN_TOOL = ["sleep", "600"]


def touch_memory(mib: int) -> bytearray:
    """mib MiB that really are resident: one write per page."""
    if mib <= 0:
        return bytearray()
    n = mib << 20
    page = os.sysconf("SC_PAGE_SIZE")
    buf = bytearray(n)
    buf[::page] = b"\x01" * (n // page)
    return buf


def vm_rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def spawn_main(a: argparse.Namespace) -> None:
    from procmgr import ProcessManager

    ballast = touch_memory(a.mib)
    argv = [a.argv]
    pc = time.perf_counter
    out = {"plain": [], "preexec": [], "create": [], "rss_kb": vm_rss_kb(), "mib": a.mib}
    pm = ProcessManager(binary=a.binary)
    out["session"] = pm.session
    out["sidecar_pid"] = pm.pid
    print(json.dumps({"sidecar": pm.pid, "session": pm.session}), file=sys.stderr, flush=True)
    tag_n = 0

    def plain() -> float:
        t0 = pc()
        p = subprocess.Popen(argv)
        t = pc() - t0
        p.wait()
        return t

    def preexec() -> float:
        t0 = pc()
        p = subprocess.Popen(argv, preexec_fn=os.setpgrp)
        t = pc() - t0
        p.wait()
        return t

    def create() -> float:
        nonlocal tag_n
        tag_n += 1
        t0 = pc()
        p = pm.create("spawn-%d" % tag_n, argv)
        t = pc() - t0
        p.stop()
        return t

    try:
        for f in (plain, preexec, create):  # warm-up: page cache, the sidecar's first fork
            f()
        rounds = max(1, a.rounds)
        fast_each = max(1, a.reps // rounds)
        slow_each = max(1, a.slow_reps // rounds)
        gc.disable()
        for r in range(rounds):
            order = [("plain", plain, fast_each), ("preexec", preexec, slow_each), ("create", create, fast_each)]
            if r % 2:
                order.reverse()
            for name, f, k in order:
                for _ in range(k):
                    out[name].append(f())
        gc.enable()
        out["rss_kb_end"] = vm_rss_kb()
    finally:
        pm.shutdown()
    del ballast
    print(json.dumps(out), flush=True)


def cleanup_main(a: argparse.Namespace) -> None:
    tools = []
    for i in range(a.tools):
        tools.append(GRANDCHILD_TOOL if i % 2 else PLAIN_TOOL)
    ready = {"host": os.getpid(), "mode": a.mode}
    if a.mode == "procmgr":
        from procmgr import ProcessManager

        pm = ProcessManager(binary=a.binary)
        procs = [pm.create("tool-%03d" % i, argv) for i, argv in enumerate(tools)]
        ready.update(
            sidecar=pm.pid,
            session=pm.session,
            log=pm.log_path,
            tools=[p.pid for p in procs],
        )
    else:
        popens = []
        watchdogs = []
        me = str(os.getpid())
        for argv in tools:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
            w = subprocess.Popen(["bash", "-c", CASA_WATCHDOG, "casa-watchdog", me, str(p.pid)])
            popens.append(p)
            watchdogs.append(w)
        ready.update(tools=[p.pid for p in popens], watchdogs=[w.pid for w in watchdogs])
    print(json.dumps(ready), flush=True)
    while True:  # until the bench SIGKILLs us
        time.sleep(3600)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("spawn")
    s.add_argument("--binary", required=True)
    s.add_argument("--mib", type=int, default=0)
    s.add_argument("--argv", default="/bin/true")
    s.add_argument("--reps", type=int, default=200)
    s.add_argument("--slow-reps", type=int, default=200)
    s.add_argument("--rounds", type=int, default=4)
    c = sub.add_parser("cleanup")
    c.add_argument("--mode", choices=("procmgr", "casa"), required=True)
    c.add_argument("--binary", default="")
    c.add_argument("--tools", type=int, default=100)
    a = ap.parse_args()
    if a.cmd == "spawn":
        spawn_main(a)
    else:
        cleanup_main(a)


if __name__ == "__main__":
    main()
