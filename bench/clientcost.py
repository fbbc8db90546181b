#!/usr/bin/env python3
"""The Python client's own cost (issue 14), in CPU time of this process.

    python3 bench/clientcost.py [--binary bin/procmgr] [--n 400] [--tools 1000]
    python3 bench/clientcost.py --profile create|list|running [--n 400]

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
import os
import pstats
import resource
import sys
import time
from typing import Any, Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib as bl  # noqa: E402

sys.path.insert(0, os.path.join(bl.REPO, "clients", "python"))

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
    a = ap.parse_args()
    if a.profile:
        profile(a.binary, a.profile, a.n, a.tools)
        return 0
    rows: Dict[str, Dict[str, List[float]]] = {}
    for r in range(a.rounds):
        order = [("client", client_ops), ("raw", raw_ops)]
        if r % 2:
            order.reverse()
        for side, fn in order:
            for op, v in fn(a.binary, a.n, a.tools).items():
                rows.setdefault(op, {}).setdefault(side + "_cpu", []).append(v["cpu"])
                for k in ("wall", "sys", "csw"):
                    rows[op].setdefault(side + "_" + k, []).append(v[k])
    print("CPU time of this process per operation (best of %d rounds); sys = kernel part,"
          " csw = context switches of this process" % a.rounds)
    print("%-12s %12s %12s %12s %16s %12s %16s" % (
        "op", "client CPU", "raw CPU", "client-raw", "sys client/raw", "csw cl/raw", "wall client/raw"))
    for op, v in rows.items():
        c, r = min(v["client_cpu"]), min(v["raw_cpu"])
        print(
            "%-12s %9.1f µs %9.1f µs %9.1f µs %7.0f/%-5.0f µs %5.1f/%-5.1f %7.0f/%-5.0f µs"
            % (op, c * 1e6, r * 1e6, (c - r) * 1e6, min(v["client_sys"]) * 1e6, min(v["raw_sys"]) * 1e6,
               min(v["client_csw"]), min(v["raw_csw"]), min(v["client_wall"]) * 1e6, min(v["raw_wall"]) * 1e6)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
