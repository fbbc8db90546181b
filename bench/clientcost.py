#!/usr/bin/env python3
"""The Python client's own cost (issue 14), in CPU time of this process.

    python3 bench/clientcost.py [--binary bin/procmgr] [--n 400] [--tools 1000]
    python3 bench/clientcost.py --profile create|list|running [--n 400]
    python3 bench/clientcost.py --against /tmp/old/clients/python [--rounds 3]

--against compares another copy of the client (e.g. `git archive <rev>
clients/python | tar -x -C /tmp/old`) with this one and the raw client: each
side runs in its own process, the order rotating per round; best of rounds.

Wall-clock figures on a shared, loaded machine are mostly the scheduler's;
CPU time is not: ``time.process_time()`` counts every thread of this process
(the caller, the client's reader thread, and its dispatcher), and the raw
client (bench/benchlib.py: one write, one blocking read, no threads) runs the
same operations against the same kind of sidecar, so "client - raw" is what the
client itself costs per operation.

--profile runs cProfile in the caller *and* in the reader thread (cProfile
only sees the thread it was enabled in) and prints both, sorted by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib as bl  # noqa: E402


def _client_dir() -> str:
    if "--client-dir" in sys.argv:
        return sys.argv[sys.argv.index("--client-dir") + 1]
    return os.path.join(bl.REPO, "clients", "python")


sys.path.insert(0, _client_dir())

cpu = time.process_time
pc = time.perf_counter


def measure(f: Callable[[], Any], n: int) -> Dict[str, float]:
    """CPU and wall seconds per call of f, over n calls (gc off)."""
    gc.collect()
    gc.disable()
    try:
        r0, c0, w0 = resource.getrusage(resource.RUSAGE_SELF), cpu(), pc()
        for _ in range(n):
            f()
        c1, w1, r1 = cpu(), pc(), resource.getrusage(resource.RUSAGE_SELF)
    finally:
        gc.enable()
    return {
        "cpu": (c1 - c0) / n,
        "wall": (w1 - w0) / n,
        "sys": (r1.ru_stime - r0.ru_stime) / n,
        "csw": (r1.ru_nvcsw + r1.ru_nivcsw - r0.ru_nvcsw - r0.ru_nivcsw) / n,
    }


def client_ops(binary: str, n: int, tools: int) -> Dict[str, Dict[str, float]]:
    from procmgr import ProcessManager

    out: Dict[str, Dict[str, float]] = {}
    pm = ProcessManager(binary=binary)
    try:
        for _ in range(50):
            pm.running("x")
        out["running"] = measure(lambda: pm.running("x"), n * 5)
        seq = [0]

        def create_stop() -> None:
            seq[0] += 1
            pm.create("c-%d" % seq[0], ["/bin/true"]).stop()

        create_stop()
        out["create+stop"] = measure(create_stop, n)
        # create alone: tools that keep running, stopped outside the window.
        made = []

        def create() -> None:
            seq[0] += 1
            made.append(pm.create("k-%d" % seq[0], ["sleep", "600"]))

        out["create"] = measure(create, n)
        for p in made:
            p.stop()
        for i in range(tools):
            pm.create("t-%d" % i, ["sleep", "600"])
        pm.list()
        out["list(%d)" % tools] = measure(pm.list, max(5, n // 20))
    finally:
        pm.shutdown()
    return out


def raw_ops(binary: str, n: int, tools: int) -> Dict[str, Dict[str, float]]:
    out: Dict[str, Dict[str, float]] = {}
    cl = bl.RawClient([binary, "--log-file", os.devnull])
    try:
        cl.call("hello", {})
        req = cl.request("running", {"tag": "x"})

        def running() -> None:
            cl.send(req)
            cl.reply_line()

        out["running"] = measure(running, n * 5)
        seq = [0]

        def create_stop() -> None:
            seq[0] += 1
            tag = "c-%d" % seq[0]
            cl.call("create", {"tag": tag, "argv": ["/bin/true"]})
            cl.call("stop", {"tag": tag})

        create_stop()
        out["create+stop"] = measure(create_stop, n)
        made = []

        def create() -> None:
            seq[0] += 1
            tag = "k-%d" % seq[0]
            cl.call("create", {"tag": tag, "argv": ["sleep", "600"]})
            made.append(tag)

        out["create"] = measure(create, n)
        for tag in made:
            cl.call("stop", {"tag": tag})
        for i in range(tools):
            cl.call("create", {"tag": "t-%d" % i, "argv": ["sleep", "600"]})
        lreq = cl.request("list", {})

        def lst() -> None:
            cl.send(lreq)
            cl.reply_line()

        out["list(%d)" % tools] = measure(lst, max(5, n // 20))
    finally:
        cl.close()
    return out


def profile(binary: str, what: str, n: int, tools: int) -> None:
    from procmgr import ProcessManager
    from procmgr import _transport

    reader_prof = cProfile.Profile()
    orig = _transport.Sidecar._read_loop

    def profiled_read_loop(self: Any) -> None:
        reader_prof.runcall(orig, self)

    _transport.Sidecar._read_loop = profiled_read_loop  # type: ignore[assignment]
    pm = ProcessManager(binary=binary)
    caller = cProfile.Profile()
    try:
        if what == "list":
            for i in range(tools):
                pm.create("t-%d" % i, ["sleep", "600"])
            pm.list()
            reader_prof.clear() if hasattr(reader_prof, "clear") else None
            caller.enable()
            for _ in range(max(5, n // 20)):
                pm.list()
            caller.disable()
        elif what == "running":
            caller.enable()
            for _ in range(n * 5):
                pm.running("x")
            caller.disable()
        else:
            made = []
            caller.enable()
            for i in range(n):
                made.append(pm.create("p-%d" % i, ["sleep", "600"]))
            caller.disable()
            for p in made:
                p.stop()
    finally:
        pm.shutdown()
    for name, prof in (("caller thread", caller), ("reader thread", reader_prof)):
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(22)
        print("=== %s (%s)" % (name, what))
        print(s.getvalue())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(bl.REPO, "bin", "procmgr"))
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--tools", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--profile", choices=("create", "list", "running"))
    ap.add_argument("--only", choices=("client", "raw"), help=argparse.SUPPRESS)
    ap.add_argument("--client-dir", help="import procmgr from here (default: this checkout)")
    ap.add_argument("--against", help="also measure the client in this directory (before/after)")
    a = ap.parse_args()
    if a.profile:
        profile(a.binary, a.profile, a.n, a.tools)
        return 0
    if a.only:
        fn = client_ops if a.only == "client" else raw_ops
        print(json.dumps(fn(a.binary, a.n, a.tools)))
        return 0
    sides = [("client", ["--only", "client"]), ("raw", ["--only", "raw"])]
    if a.against:
        sides.insert(0, ("before", ["--only", "client", "--client-dir", a.against]))
    rows: Dict[str, Dict[str, List[Dict[str, float]]]] = {}
    for r in range(a.rounds):
        order = sides[r % len(sides):] + sides[: r % len(sides)]
        for side, extra in order:
            cmd = [sys.executable, os.path.abspath(__file__), "--binary", a.binary, "--n", str(a.n),
                   "--tools", str(a.tools)] + extra
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE).stdout
            for op, v in json.loads(out.decode().strip().splitlines()[-1]).items():
                rows.setdefault(op, {}).setdefault(side, []).append(v)
    names = [s for s, _ in sides]
    print("per operation, best of %d rounds: CPU time of the client process (all its threads) "
          "[kernel part, context switches]; wall time last (noise on a loaded machine)" % a.rounds)
    for op, v in rows.items():
        cells = []
        for side in names:
            best = min(v[side], key=lambda x: x["cpu"])
            cells.append("%s %7.1f µs [sys %5.1f, csw %4.1f] wall %6.0f" % (
                side, best["cpu"] * 1e6, best["sys"] * 1e6, best["csw"], min(x["wall"] for x in v[side]) * 1e6))
        print("%-12s %s" % (op, " | ".join(cells)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
