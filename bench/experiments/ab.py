#!/usr/bin/env python3
"""A/B the prototype changes of bench/experiments/proposals.diff against the
sidecar as it is, interleaved in one run (see README.md beside this file).

    python3 bench/experiments/ab.py --base bin/procmgr --exp /tmp/exp/procmgr [--only rt,tp,list,cleanup,start]

Each variant is the patched binary with some PMEXP_* switches set; "base" is
the unpatched one and "echo" the floor. Prints p50 (and p99) per variant.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from typing import Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
sys.path.insert(0, BENCH)
import benchlib as bl  # noqa: E402
import run as R  # noqa: E402

sys.path.insert(0, os.path.join(bl.REPO, "clients", "python"))
SWITCHES = ("PMEXP_INLINE", "PMEXP_DIRECT", "PMEXP_FAST", "PMEXP_SIGFIRST", "PMEXP_CGONLY", "PMEXP_WDLATE")
pc = time.perf_counter


def use(env: Dict[str, str]) -> None:
    for k in SWITCHES:
        os.environ.pop(k, None)
    os.environ.update(env)


def variants(base: str, exp: str, echo: str, names: List[str]) -> Dict[str, Tuple[str, Dict[str, str]]]:
    all_ = {
        "base": (base, {}),
        "inline (a)": (exp, {"PMEXP_INLINE": "1"}),
        "direct (b2)": (exp, {"PMEXP_DIRECT": "1"}),
        "a+b1+b2": (exp, {"PMEXP_INLINE": "1", "PMEXP_FAST": "1", "PMEXP_DIRECT": "1"}),
        "sigfirst (c)": (exp, {"PMEXP_SIGFIRST": "1"}),
        "cgonly (d)": (exp, {"PMEXP_CGONLY": "1"}),
        "c+d": (exp, {"PMEXP_SIGFIRST": "1", "PMEXP_CGONLY": "1"}),
        "wdlate (e)": (exp, {"PMEXP_WDLATE": "1"}),
        "echo": (echo, {}),
    }
    return {n: all_[n] for n in names}


def ab_rt(v: Dict[str, Tuple[str, Dict[str, str]]], rounds: int) -> None:
    from procmgr import ProcessManager

    raw, cli = {}, {}
    for name, (b, env) in v.items():
        use(env)
        raw[name] = bl.RawClient([b, "--log-file", os.devnull])
        raw[name].call("hello", {})
        cli[name] = ProcessManager(binary=b)
    use({})
    res: Dict[str, Tuple[List[float], List[float]]] = {k: ([], []) for k in v}
    try:
        for r in range(rounds):
            names = list(v) if r % 2 == 0 else list(reversed(list(v)))
            for name in names:
                cl = raw[name]
                req = cl.request("running", {"tag": "x"})
                res[name][0].extend(R._time_raw(cl, req, 500))
                res[name][1].extend(R._time_calls(cli[name].running, "x", 500))
    finally:
        for name in v:
            raw[name].close()
            cli[name].shutdown()
    floor = res.get("echo")
    print("round trip `running` (p50 / p99, µs)")
    for name, (a, b) in res.items():
        extra = ""
        if floor:
            extra = "   client %.2f× floor" % (bl.median(b) / bl.median(floor[1]))
        print("  %-13s raw %6.1f / %7.1f   client %6.1f / %7.1f%s" % (
            name, bl.median(a) * 1e6, bl.quantile(a, .99) * 1e6, bl.median(b) * 1e6, bl.quantile(b, .99) * 1e6, extra))


def ab_tp(v: Dict[str, Tuple[str, Dict[str, str]]], rounds: int) -> None:
    from procmgr import ProcessManager

    raw, cli = {}, {}
    for name, (b, env) in v.items():
        use(env)
        raw[name] = bl.RawClient([b, "--log-file", os.devnull])
        raw[name].call("hello", {})
        cli[name] = ProcessManager(binary=b)
    use({})
    res: Dict[str, Tuple[List[float], List[float]]] = {k: ([], []) for k in v}
    try:
        for r in range(rounds):
            for name in (list(v) if r % 2 == 0 else list(reversed(list(v)))):
                res[name][0].append(R._pipelined(raw[name], 16, 1.0))
                res[name][1].append(R._throughput(cli[name].running, "x", 16, 1.0))
    finally:
        for name in v:
            raw[name].close()
            cli[name].shutdown()
    print("throughput (median calls/s)")
    for name, (a, b) in res.items():
        print("  %-13s raw pipelined 16 in flight %8.0f   Python client 16 threads %7.0f" % (name, bl.median(a), bl.median(b)))


def ab_list(v: Dict[str, Tuple[str, Dict[str, str]]], rounds: int) -> None:
    raw = {}
    v = {k: x for k, x in v.items() if k != "echo"}
    try:
        for name, (b, env) in v.items():
            use(env)
            cl = bl.RawClient([b, "--log-file", os.devnull])
            cl.call("hello", {})
            for i in range(1000):
                cl.call("create", {"tag": "t%04d" % i, "argv": ["sleep", "600"]})
            raw[name] = cl
        use({})
        res: Dict[str, List[float]] = {k: [] for k in v}
        for r in range(rounds):
            for name, cl in raw.items():
                req = cl.request("list", {})
                for _ in range(10):
                    t0 = pc()
                    cl.send(req)
                    cl.reply_line()
                    res[name].append(pc() - t0)
        print("`list` at 1000 tools, raw client (p50 ms)")
        for name, xs in res.items():
            print("  %-13s %.2f" % (name, bl.median(xs) * 1e3))
    finally:
        for cl in raw.values():
            cl.close()


def ab_cleanup(v: Dict[str, Tuple[str, Dict[str, str]]], rounds: int) -> None:
    v = {k: x for k, x in v.items() if k != "echo"}
    b = R.Bench(list(v.values())[0][0], R.Params(False))
    res: Dict[str, List[dict]] = {k: [] for k in v}
    try:
        for _ in range(rounds):
            for name, (binary, env) in v.items():
                use(env)
                b.binary = binary
                res[name].append(b._cleanup_trial("procmgr", 100))
    finally:
        use({})
        b.reaper.kill_all()
        bl.rmtree(b.tmp)
    print("host SIGKILLed, 100 tools + 50 grandchildren (ms): last gone p50 [trials]; sidecar exit p50")
    for name, xs in res.items():
        last = [x["last_dead"] * 1e3 for x in xs]
        gone = [(x["sidecar_gone"] or float("nan")) * 1e3 for x in xs]
        print("  %-13s %6.1f [%s]   sidecar exit %6.1f   survivors %d" % (
            name, bl.median(last), " ".join("%.0f" % t for t in last), bl.median(gone), sum(x["survivors"] for x in xs)))


def ab_start(v: Dict[str, Tuple[str, Dict[str, str]]], rounds: int) -> None:
    hello = b'{"jsonrpc":"2.0","id":1,"method":"hello","params":{}}\n'
    res: Dict[str, List[float]] = {k: [] for k in v}
    reaper = bl.Reaper()
    try:
        for _ in range(rounds):
            for name, (b, env) in v.items():
                use(env)
                t0 = pc()
                cl = bl.RawClient([b, "--log-file", os.devnull])
                cl.send(hello)
                cl.reply_line()
                res[name].append(pc() - t0)
                cl.close()
    finally:
        use({})
        reaper.kill_all()
    print("start: spawn → hello reply (p50 / p90 ms)")
    for name, xs in res.items():
        print("  %-13s %.2f / %.2f" % (name, bl.median(xs) * 1e3, bl.quantile(xs, .9) * 1e3))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="procmgr as it is")
    ap.add_argument("--exp", required=True, help="procmgr built with proposals.diff applied")
    ap.add_argument("--only", default="rt,tp,list,cleanup,start")
    ap.add_argument("--rounds", type=int, default=6)
    a = ap.parse_args()
    tmp = bl.make_tmpdir()
    reaper = bl.Reaper()
    try:
        echo = bl.build_echo(tmp)
        base, exp = os.path.abspath(a.base), os.path.abspath(a.exp)
        with open("/proc/loadavg") as f:
            print("load average at start:", f.read().strip())
        only = a.only.split(",")
        gc.collect()
        if "rt" in only:
            ab_rt(variants(base, exp, echo, ["base", "inline (a)", "direct (b2)", "a+b1+b2", "echo"]), a.rounds)
        if "tp" in only:
            ab_tp(variants(base, exp, echo, ["base", "inline (a)", "direct (b2)", "a+b1+b2", "echo"]), max(1, a.rounds // 2))
        if "list" in only:
            ab_list(variants(base, exp, echo, ["base", "direct (b2)"]), a.rounds)
        if "cleanup" in only:
            ab_cleanup(variants(base, exp, echo, ["base", "sigfirst (c)", "cgonly (d)", "c+d"]), max(2, a.rounds // 2))
        if "start" in only:
            ab_start(variants(base, exp, echo, ["base", "wdlate (e)", "echo"]), a.rounds * 5)
        with open("/proc/loadavg") as f:
            print("load average at end:", f.read().strip())
    finally:
        reaper.kill_all()
        bl.rmtree(tmp)


if __name__ == "__main__":
    main()
