#!/usr/bin/env python3
"""procmgr benchmarks (issue 6): every figure against a baseline measured in
the same run, printed as a table and, with --out, written as Markdown.

    go build -o bin/procmgr . && python3 bench/run.py --out docs/benchmarks.md
    python3 bench/run.py --smoke          # every row, tiny counts, < 30 s (CI)

Rows:
 1. RPC round trip: `running` from the Python client vs. the floor, a Go
    program that echoes each line back (bench/echo), driven by the same client.
 2. Throughput with 1, 4 and 16 client threads, same comparison.
 3. Spawn: create vs. in-process Popen (plain and preexec_fn) from a small
    host and from a host holding 2 GiB of touched memory.
 4. Cleanup: host SIGKILLed with 100 tools (half with a grandchild) until the
    last is gone, from /proc; vs. a CASA-style kill -0 watchdog per tool.
 5. Scale: 1000 tools: sidecar RSS, CPU over idle seconds, `list` latency.
 6. Sidecar start: spawn to the first `hello` reply.
 7. The Python client's own cost: create and `list` through ProcessManager
    vs. the raw client against the same kind of sidecar, interleaved in one
    process, in wall time and in this process's CPU time per call.

Standard library only. Every process started is killed at the end, found by
the PROCMGR_BENCH_MARK variable every child inherits.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib as bl  # noqa: E402

REPO = bl.REPO
sys.path.insert(0, os.path.join(REPO, "clients", "python"))

pc = time.perf_counter


class Params:
    """Repetition counts: full run and --smoke."""

    def __init__(self, smoke: bool) -> None:
        self.smoke = smoke
        # row 1: rounds x calls per round, for each side
        self.rt_rounds, self.rt_calls = (2, 50) if smoke else (10, 1000)
        # row 2: seconds per measurement, rounds
        self.tp_secs, self.tp_rounds = (0.1, 1) if smoke else (1.0, 3)
        # row 3: fast variants, preexec variants, rounds, big host MiB
        self.sp_reps, self.sp_slow_small, self.sp_slow_big, self.sp_rounds = (
            (6, 6, 3, 1) if smoke else (400, 200, 24, 4)
        )
        self.big_mib = 256 if smoke else 2048
        # row 4: trials per mode, tools per host
        self.cl_trials_pm, self.cl_trials_casa, self.cl_tools = (1, 1, 20) if smoke else (7, 3, 100)
        # row 5: tools, idle seconds, list calls per size
        self.sc_tools, self.sc_idle, self.sc_list = (100, 1.0, 5) if smoke else (1000, 10.0, 200)
        # row 6: starts per binary
        self.st_reps = 3 if smoke else 40
        # row 7: creates per side, lists per side, interleaved rounds, tools listed
        self.co_creates, self.co_lists, self.co_rounds, self.co_tools = (
            (12, 6, 2, 50) if smoke else (400, 100, 4, 1000)
        )


class Line:
    """One line of the table."""

    def __init__(
        self,
        row: str,
        what: str,
        value: str,
        baseline: str = "",
        ratio: str = "",
        goal: str = "",
        met: Optional[bool] = None,
        reps: str = "",
        noise: str = "",
    ) -> None:
        self.row, self.what, self.value, self.baseline = row, what, value, baseline
        self.ratio, self.goal, self.met, self.reps, self.noise = ratio, goal, met, reps, noise


class Bench:
    def __init__(self, binary: str, params: Params) -> None:
        self.binary = binary
        self.p = params
        self.reaper = bl.Reaper()
        self.tmp = bl.make_tmpdir()
        self.echo = ""
        self.lines: List[Line] = []
        self.notes: Dict[str, List[str]] = {}
        self.errors: Dict[str, str] = {}
        self.raw: Dict[str, Any] = {}

    # -- helpers ------------------------------------------------------------

    def note(self, row: str, text: str) -> None:
        self.notes.setdefault(row, []).append(text)

    def add(self, line: Line) -> None:
        self.lines.append(line)
        print(
            "  %-44s %-24s %-24s %-16s %s"
            % (line.what, line.value, line.baseline, line.ratio, _met(line.met)),
            flush=True,
        )

    def manager(self, binary: str) -> Any:
        from procmgr import ProcessManager

        pm = ProcessManager(binary=binary)
        self.reaper.add_session(pm.session)
        return pm

    def raw_client(self, binary: str, extra: Optional[List[str]] = None) -> bl.RawClient:
        argv = [binary, "--log-file", os.path.join(self.tmp, "raw.log")] + (extra or [])
        return bl.RawClient(argv)

    def hello(self, cl: bl.RawClient) -> Dict[str, Any]:
        """hello through a raw client; its session is noted so that the clean-up
        can remove the session's cgroup should the sidecar not get to it."""
        h = cl.call("hello", {}) or {}
        self.reaper.add_session(str(h.get("session") or ""))
        return h

    def host(self, args: List[str]) -> subprocess.Popen:
        # A host that dies of SIGKILL leaves its client's log directory behind
        # (kept on purpose, for a post-mortem): put it in the bench's own.
        p = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "hosts.py")] + args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=dict(os.environ, TMPDIR=self.tmp),
        )
        self.reaper.add_group(p.pid)
        return p

    # -- row 1: round trip --------------------------------------------------

    def row1(self) -> None:
        p = self.p
        pm = self.manager(self.binary)
        floor = self.manager(self.echo)
        try:
            pm.create("rt", ["sleep", "600"])
            a: List[float] = []
            b: List[float] = []
            ratios: List[float] = []
            f_pm, f_floor = pm.running, floor.running
            for _ in range(200):  # warm-up
                f_pm("rt")
                f_floor("rt")
            for r in range(p.rt_rounds):
                sides = [(f_pm, a), (f_floor, b)]
                if r % 2:  # alternate which side goes first
                    sides.reverse()
                got = {}
                for f, acc in sides:
                    xs = _time_calls(f, "rt", p.rt_calls)
                    acc += xs
                    got[id(acc)] = bl.median(xs)
                ratios.append(got[id(a)] / got[id(b)])
            sa, sb = bl.summary(a), bl.summary(b)
            ratio = sa["p50"] / sb["p50"]
            self.raw["row1_client"] = {"procmgr": sa, "floor": sb, "round_ratios": ratios}
            self.add(
                Line(
                    "1",
                    "`running` round trip, Python client (p50 / p99)",
                    bl.p50_p99(sa),
                    bl.p50_p99(sb),
                    "%s× (p99 %s×)" % (bl.fmt_num(ratio), bl.fmt_num(sa["p99"] / sb["p99"])),
                    "≤ 1.3× at p50",
                    ratio <= 1.3,
                    "%d calls each, %d interleaved rounds" % (sa["n"], p.rt_rounds),
                    "per-round ratio %s; IQR/median %.0f%% vs %.0f%%"
                    % (bl.spread(ratios), 100 * sa["iqr_rel"], 100 * sb["iqr_rel"]),
                )
            )
        finally:
            pm.shutdown()
            floor.shutdown()

        # The same with a synchronous client: one write, one read, no threads.
        rp = self.raw_client(self.binary)
        re_ = self.raw_client(self.echo)
        try:
            self.hello(rp)
            self.hello(re_)
            req_p = rp.request("running", {"tag": "rt"})
            req_e = re_.request("running", {"tag": "rt"})
            a, b, ratios = [], [], []
            for _ in range(200):
                _raw_rt(rp, req_p)
                _raw_rt(re_, req_e)
            for r in range(p.rt_rounds):
                pair = [(rp, req_p, a), (re_, req_e, b)]
                if r % 2:
                    pair.reverse()
                got = {}
                for cl, req, acc in pair:
                    xs = _time_raw(cl, req, p.rt_calls)
                    acc += xs
                    got[id(acc)] = bl.median(xs)
                ratios.append(got[id(a)] / got[id(b)])
            sa, sb = bl.summary(a), bl.summary(b)
            self.raw["row1_raw"] = {"procmgr": sa, "floor": sb, "round_ratios": ratios}
            self.add(
                Line(
                    "1",
                    "`running` round trip, synchronous raw client",
                    bl.p50_p99(sa),
                    bl.p50_p99(sb),
                    "%s× (p99 %s×)" % (bl.fmt_num(sa["p50"] / sb["p50"]), bl.fmt_num(sa["p99"] / sb["p99"])),
                    "(diagnostic)",
                    None,
                    "%d calls each, %d interleaved rounds" % (sa["n"], p.rt_rounds),
                    "per-round ratio %s; sidecar's own cost ≈ %s"
                    % (bl.spread(ratios), bl.fmt_us(sa["p50"] - sb["p50"])),
                )
            )
        finally:
            rp.close()
            re_.close()

    # -- row 2: throughput ----------------------------------------------------

    def row2(self) -> None:
        p = self.p
        pm = self.manager(self.binary)
        floor = self.manager(self.echo)
        try:
            pm.create("tp", ["sleep", "600"])
            for threads in (1, 4, 16):
                a, b = [], []
                for r in range(p.tp_rounds):
                    order = [(pm, a), (floor, b)]
                    if r % 2:
                        order.reverse()
                    for m, acc in order:
                        acc.append(_throughput(m.running, "tp", threads, p.tp_secs))
                ma, mb = bl.median(a), bl.median(b)
                goal = "≥ 20k calls/s" if threads == 16 else ""
                self.raw["row2_threads_%d" % threads] = {"procmgr": a, "floor": b}
                self.add(
                    Line(
                        "2",
                        "throughput, Python client, %d thread%s" % (threads, "s" if threads > 1 else ""),
                        "%s calls/s" % _k(ma),
                        "%s calls/s" % _k(mb),
                        "%s× of floor" % bl.fmt_num(ma / mb),
                        goal,
                        (ma >= 20000) if threads == 16 else None,
                        "%d × %.1f s each" % (p.tp_rounds, p.tp_secs),
                        "procmgr %s–%s, floor %s–%s" % (_k(min(a)), _k(max(a)), _k(min(b)), _k(max(b))),
                    )
                )
        finally:
            pm.shutdown()
            floor.shutdown()

        # What the sidecar itself sustains: a raw driver keeps a window of
        # requests in flight on one pipe (no client threads, no JSON decoding).
        rp = self.raw_client(self.binary)
        re_ = self.raw_client(self.echo)
        try:
            self.hello(rp)
            self.hello(re_)
            for window in (16,):
                a, b = [], []
                for r in range(p.tp_rounds):
                    order = [(rp, a), (re_, b)]
                    if r % 2:
                        order.reverse()
                    for cl, acc in order:
                        acc.append(_pipelined(cl, window, p.tp_secs))
                ma, mb = bl.median(a), bl.median(b)
                self.raw["row2_pipelined_%d" % window] = {"procmgr": a, "floor": b}
                self.add(
                    Line(
                        "2",
                        "throughput, raw pipelined driver, %d in flight" % window,
                        "%s calls/s" % _k(ma),
                        "%s calls/s" % _k(mb),
                        "%s× of floor" % bl.fmt_num(ma / mb),
                        "(sidecar capacity)",
                        None,
                        "%d × %.1f s each" % (p.tp_rounds, p.tp_secs),
                        "procmgr %s–%s, floor %s–%s" % (_k(min(a)), _k(max(a)), _k(min(b)), _k(max(b))),
                    )
                )
        finally:
            rp.close()
            re_.close()

    # -- row 3: spawn -----------------------------------------------------------

    def row3(self) -> None:
        p = self.p
        res = {}
        for size, mib, slow in (("small", 0, p.sp_slow_small), ("big", p.big_mib, p.sp_slow_big)):
            h = self.host(
                [
                    "spawn",
                    "--binary", self.binary,
                    "--mib", str(mib),
                    "--argv", "/bin/true",
                    "--reps", str(p.sp_reps),
                    "--slow-reps", str(slow),
                    "--rounds", str(p.sp_rounds),
                ]
            )
            try:
                out, err = h.communicate(timeout=240)
            except subprocess.TimeoutExpired:
                h.kill()
                h.communicate()
                raise RuntimeError("the %s spawn host timed out" % size)
            if h.returncode != 0:
                raise RuntimeError("the %s spawn host failed: %s" % (size, err.decode(errors="replace")[-2000:]))
            for line in err.decode(errors="replace").splitlines():
                try:
                    self.reaper.add_session(json.loads(line).get("session", ""))
                except ValueError:
                    pass
            res[size] = json.loads(out.decode().strip().splitlines()[-1])
        self.raw["row3"] = {k: {n: bl.summary(v[n]) for n in ("plain", "preexec", "create")} for k, v in res.items()}
        s, b = res["small"], res["big"]
        sc, sp, sx = bl.summary(s["create"]), bl.summary(s["plain"]), bl.summary(s["preexec"])
        r = sc["p50"] / sp["p50"]
        self.add(
            Line(
                "3",
                "spawn /bin/true, small host (%d MiB RSS): create vs Popen" % (s["rss_kb"] // 1024),
                bl.p50_p99(sc),
                bl.p50_p99(sp),
                "%s×" % bl.fmt_num(r),
                "≤ 1.5× plain Popen",
                r <= 1.5,
                "%d each" % sc["n"],
                bl.noise(sc, sp),
            )
        )
        self.add(
            Line(
                "3",
                "  small host: create vs Popen(preexec_fn=os.setpgrp)",
                bl.p50_p99(sc),
                bl.p50_p99(sx),
                "%s× faster" % bl.fmt_num(sx["p50"] / sc["p50"]),
                "",
                None,
                "%d / %d" % (sc["n"], sx["n"]),
                bl.noise(sc, sx),
            )
        )
        bc, bp, bx = bl.summary(b["create"]), bl.summary(b["plain"]), bl.summary(b["preexec"])
        speed = bx["p50"] / bc["p50"]
        self.add(
            Line(
                "3",
                "big host (%d MiB touched, RSS %d MiB): create vs Popen(preexec_fn)"
                % (b["mib"], b["rss_kb"] // 1024),
                bl.p50_p99(bc),
                bl.p50_p99(bx),
                "%s× faster" % bl.fmt_num(speed),
                "≥ 100× faster",
                speed >= 100,
                "%d / %d" % (bc["n"], bx["n"]),
                bl.noise(bc, bx),
            )
        )
        self.add(
            Line(
                "3",
                "  big host: create vs plain Popen (vfork)",
                bl.p50_p99(bc),
                bl.p50_p99(bp),
                "%s×" % bl.fmt_num(bc["p50"] / bp["p50"]),
                "",
                None,
                "%d each" % bc["n"],
                bl.noise(bc, bp),
            )
        )
        if self.p.smoke:
            self.note("3", "smoke mode: the big host holds %d MiB, not 2 GiB" % self.p.big_mib)
        self._row3_raw()

    def _row3_raw(self) -> None:
        """Diagnostic: create through the synchronous raw client (no Python
        client, no environment sent), with and without cgroup mode, against
        Popen in this same process."""
        p = self.p
        n = max(3, p.sp_reps // 2)
        rounds = max(1, p.sp_rounds)
        clients = {"cgroup": self.raw_client(self.binary), "no-cgroup": self.raw_client(self.binary, ["--no-cgroup"])}
        res: Dict[str, List[float]] = {"cgroup": [], "no-cgroup": [], "popen": []}
        seq = [0]

        def create(cl: bl.RawClient) -> float:
            seq[0] += 1
            tag = "raw-%d" % seq[0]
            t0 = pc()
            cl.call("create", {"tag": tag, "argv": ["/bin/true"]})
            t = pc() - t0
            cl.call("stop", {"tag": tag})
            return t

        def popen() -> float:
            t0 = pc()
            pr = subprocess.Popen(["/bin/true"])
            t = pc() - t0
            pr.wait()
            return t

        try:
            for cl in clients.values():
                self.hello(cl)
                create(cl)
            popen()
            for r in range(rounds):
                order = ["popen", "cgroup", "no-cgroup"]
                if r % 2:
                    order.reverse()
                for name in order:
                    for _ in range(max(1, n // rounds)):
                        res[name].append(popen() if name == "popen" else create(clients[name]))
        finally:
            for cl in clients.values():
                cl.close()
        sp = bl.summary(res["popen"])
        self.raw["row3_raw"] = {k: bl.summary(v) for k, v in res.items()}
        for name in ("cgroup", "no-cgroup"):
            sc = bl.summary(res[name])
            self.add(
                Line(
                    "3",
                    "  create via raw client, sidecar %s, vs Popen here" % ("default (cgroup mode)" if name == "cgroup" else "--no-cgroup"),
                    bl.p50_p99(sc),
                    bl.p50_p99(sp),
                    "%s×" % bl.fmt_num(sc["p50"] / sp["p50"]),
                    "(diagnostic)",
                    None,
                    "%d each" % sc["n"],
                    bl.noise(sc, sp),
                )
            )

    # -- row 4: cleanup ---------------------------------------------------------

    def row4(self) -> None:
        p = self.p
        pm_runs, casa_runs = [], []
        trials = [("procmgr", i) for i in range(p.cl_trials_pm)] + [("casa", i) for i in range(p.cl_trials_casa)]
        # interleave the two modes
        trials.sort(key=lambda t: (t[1], t[0]))
        for mode, _ in trials:
            res = self._cleanup_trial(mode, p.cl_tools)
            (pm_runs if mode == "procmgr" else casa_runs).append(res)
        self.raw["row4"] = {"procmgr": pm_runs, "casa": casa_runs}
        last = [r["last_dead"] for r in pm_runs]
        tools_pm = [r["tools_dead"] for r in pm_runs]
        sp = bl.summary(last)
        surv_pm = sum(r["survivors"] for r in pm_runs)
        casa_tool_surv = sum(r["tool_survivors"] for r in casa_runs)
        casa_tools = [r["tools_dead"] for r in casa_runs]
        casa_gc = sum(r["grand_survivors"] for r in casa_runs)
        n_gc = sum(r["grandchildren"] for r in casa_runs)
        sc = bl.summary(casa_tools)
        ratio = sc["p50"] / sp["p50"]
        notice = [r["noticed"] for r in pm_runs if r.get("noticed") is not None]
        self.add(
            Line(
                "4",
                "host SIGKILLed, %d tools + %d grandchildren: last gone"
                % (p.cl_tools, pm_runs[0]["grandchildren"]),
                "%s / max %s" % (bl.fmt_us(sp["p50"]), bl.fmt_us(sp["max"])),
                "%s / max %s (tools only)" % (bl.fmt_us(sc["p50"]), bl.fmt_us(sc["max"])),
                "%s× faster" % bl.fmt_num(ratio),
                "≤ 50 ms",
                sp["p50"] <= 0.050 and surv_pm == 0,
                "%d procmgr, %d CASA trials" % (len(pm_runs), len(casa_runs)),
                "procmgr %s–%s" % (bl.fmt_us(sp["min"]), bl.fmt_us(sp["max"])),
            )
        )
        n_pm = sum(r["tools"] + r["grandchildren"] for r in pm_runs)
        self.add(
            Line(
                "4",
                "  processes left running at the end of the watch",
                "%d of %d" % (surv_pm, n_pm),
                "%d of %d grandchildren, %d of %d tools (CASA signals the direct child only)"
                % (casa_gc, n_gc, casa_tool_surv, sum(r["tools"] for r in casa_runs)),
                "",
                "0",
                surv_pm == 0,
                "watched 10 s (procmgr), 2.5 s (CASA)",
                "",
            )
        )
        if notice:
            self.add(
                Line(
                    "4",
                    "  procmgr: kill → sidecar logs 'host died'",
                    "%s (p50)" % bl.fmt_us(bl.median(notice)),
                    "",
                    "",
                    "",
                    None,
                    "%d trials" % len(notice),
                    "direct tools gone at p50 %s" % bl.fmt_us(bl.median(tools_pm)),
                )
            )

    def _cleanup_trial(self, mode: str, ntools: int) -> Dict[str, Any]:
        h = self.host(["cleanup", "--mode", mode, "--binary", self.binary, "--tools", str(ntools)])
        try:
            ready = _read_json_line(h, timeout=60)
            if mode == "procmgr":
                self.reaper.add_session(ready.get("session", ""))
            tools = ready["tools"]
            # grandchildren: the children of the sh tools (odd indexes)
            deadline = time.monotonic() + 5
            grand: List[int] = []
            while time.monotonic() < deadline:
                grand = []
                for i, pid in enumerate(tools):
                    if i % 2:
                        grand += bl.children_of(pid)
                if len(grand) >= len(tools) // 2:
                    break
                time.sleep(0.01)
            watched = {}
            for pid in tools + grand:
                st = bl.proc_stat(pid)
                if st is None or st[0] in "ZX":
                    raise RuntimeError("tool %d already gone before the kill" % pid)
                watched[pid] = st[4]
            sidecar = ready.get("sidecar")
            sidecar_start = bl.proc_stat(sidecar)[4] if sidecar else None
            gone: Dict[int, float] = {}
            limit = 10.0 if mode == "procmgr" else 2.5
            t_wall = time.time()
            t0 = pc()
            # Reap the host at once, as the shell it ran under would (a zombie
            # still answers kill -0, which would hold the CASA watchdogs back),
            # on a thread, so that polling starts at once.
            reaped: List[float] = []
            reaper = threading.Thread(target=lambda: (h.wait(), reaped.append(pc() - t0)), daemon=True)
            os.kill(h.pid, signal.SIGKILL)
            reaper.start()
            sidecar_gone = None
            while pc() - t0 < limit:
                now = pc()
                for pid, start in watched.items():
                    if pid not in gone and not bl.alive(pid, start):
                        gone[pid] = now - t0
                if sidecar and sidecar_gone is None and not bl.alive(sidecar, sidecar_start):
                    sidecar_gone = now - t0
                if len(gone) == len(watched) and (not sidecar or sidecar_gone is not None):
                    break
            reaper.join(5)
            t_reaped = reaped[0] if reaped else float("nan")
            survivors = [pid for pid in watched if pid not in gone]
            tool_times = [gone.get(pid, float("inf")) for pid in tools]
            grand_times = [gone.get(pid, float("inf")) for pid in grand]
            deaths = sorted(gone.values())
            res = {
                "first_dead": deaths[0] if deaths else float("inf"),
                "median_dead": bl.median(deaths) if deaths else float("inf"),
                "mode": mode,
                "tools": len(tools),
                "grandchildren": len(grand),
                "tools_dead": max(tool_times),
                "last_dead": max(gone.values()) if not survivors else float("inf"),
                "survivors": len(survivors),
                "tool_survivors": sum(1 for t in tool_times if t == float("inf")),
                "grand_survivors": sum(1 for t in grand_times if t == float("inf")),
                "host_reaped": t_reaped,
                "sidecar_gone": sidecar_gone,
                "noticed": None,
            }
            if mode == "procmgr" and ready.get("log"):
                res["noticed"] = _log_notice(ready["log"], t_wall)
            return res
        finally:
            try:
                h.kill()
            except OSError:
                pass
            h.wait()
            self.reaper.kill_all()

    # -- row 5: scale -------------------------------------------------------------

    def row5(self) -> None:
        p = self.p
        pm = self.manager(self.binary)
        floor = self.manager(self.echo)
        sizes = [n for n in (10, 100, 1000) if n <= p.sc_tools]
        lists: Dict[int, Dict[str, float]] = {}
        try:
            spid = pm.pid
            rss0 = bl.status_kb(spid, "VmRSS")
            echo_rss = bl.status_kb(floor.pid, "VmRSS")
            running = bl.summary(_time_calls(pm.running, "t-0", 200))
            made = 0
            t_create = pc()
            for n in sizes:
                while made < n:
                    pm.create("t-%d" % made, ["sleep", "600"])
                    made += 1
                for _ in range(3):
                    pm.list()
                gc.disable()
                xs = []
                for _ in range(p.sc_list):
                    t0 = pc()
                    got = pm.list()
                    xs.append(pc() - t0)
                gc.enable()
                if len(got) != n:
                    raise RuntimeError("list returned %d tools, expected %d" % (len(got), n))
                lists[n] = bl.summary(xs)
            t_create = pc() - t_create
            time.sleep(0.5)  # let the last exits/logs settle
            rss = bl.status_kb(spid, "VmRSS")
            c0, e0 = bl.cpu_usage(spid), bl.cpu_usage(floor.pid)
            time.sleep(p.sc_idle)
            c1, e1 = bl.cpu_usage(spid), bl.cpu_usage(floor.pid)
            cpu_ms = (c1["ns"] - c0["ns"]) / 1e6
            echo_ms = (e1["ns"] - e0["ns"]) / 1e6
            wake = (c1["switches"] - c0["switches"]) / p.sc_idle
            ewake = (e1["switches"] - e0["switches"]) / p.sc_idle
            n = made
            self.raw["row5"] = {
                "rss_kb_idle": rss0, "rss_kb": rss, "echo_rss_kb": echo_rss,
                "cpu_ms": cpu_ms, "echo_cpu_ms": echo_ms, "wakeups_per_s": wake,
                "echo_wakeups_per_s": ewake, "threads": c1["threads"],
                "list": lists, "running": running, "create_all_s": t_create,
            }
            self.add(
                Line(
                    "5",
                    "sidecar RSS with %d tools" % n,
                    "%.1f MiB" % (rss / 1024),
                    "%.1f MiB (idle Go echo)" % (echo_rss / 1024),
                    "%s×" % bl.fmt_num(rss / echo_rss),
                    "",
                    None,
                    "1 reading",
                    "%.1f MiB with 0 tools; %.1f KiB per tool" % (rss0 / 1024, (rss - rss0) / max(1, n)),
                )
            )
            limit_ms = p.sc_idle  # 0.1 % of one core
            self.add(
                Line(
                    "5",
                    "CPU over %.0f idle s with %d tools" % (p.sc_idle, n),
                    "%.2f ms, %.1f wake-ups/s" % (cpu_ms, wake),
                    "%.2f ms, %.1f wake-ups/s (echo)" % (echo_ms, ewake),
                    "+%.2f ms" % (cpu_ms - echo_ms),
                    "≈ 0 (≤ %.0f ms: 0.1%% of a core)" % limit_ms,
                    cpu_ms <= limit_ms,
                    "1 window, both measured at once",
                    "schedstat ns over %d threads" % c1["threads"],
                )
            )
            base = lists[sizes[0]]["p50"]
            for size in sizes:
                s = lists[size]
                self.add(
                    Line(
                        "5",
                        "`list` (Python client) at %d tools" % size,
                        bl.p50_p99(s),
                        "%s (`running`)" % bl.fmt_us(running["p50"]),
                        "%s× running" % bl.fmt_num(s["p50"] / running["p50"]),
                        "",
                        None,
                        "%d calls" % s["n"],
                        "%s per tool above 10; IQR/median %.0f%%"
                        % (bl.fmt_us((s["p50"] - base) / max(1, size - sizes[0])) if size > sizes[0] else "-",
                           100 * s["iqr_rel"]),
                    )
                )
        finally:
            t = pc()
            pm.shutdown()
            floor.shutdown()
            self.raw.setdefault("row5", {})["shutdown_s"] = pc() - t

        # Diagnostic: the same lists through the raw client, which reads the
        # reply's bytes and decodes nothing: the sidecar's and the pipe's share.
        cl = self.raw_client(self.binary)
        try:
            self.hello(cl)
            made = 0
            for n in sizes:
                while made < n:
                    cl.call("create", {"tag": "t-%d" % made, "argv": ["sleep", "600"]})
                    made += 1
                req = cl.request("list", {})
                xs, size = [], 0
                for _ in range(max(3, p.sc_list // 2)):
                    t0 = pc()
                    cl.send(req)
                    size = len(cl.reply_line())
                    xs.append(pc() - t0)
                s = bl.summary(xs)
                client = lists[n]["p50"]
                self.add(
                    Line(
                        "5",
                        "  `list` raw client (sidecar + pipe only) at %d tools" % n,
                        bl.p50_p99(s),
                        "%s (Python client)" % bl.fmt_us(client),
                        "%.0f%% of the client's time" % (100 * s["p50"] / client),
                        "(diagnostic)",
                        None,
                        "%d calls" % s["n"],
                        "%d KiB reply" % (size // 1024),
                    )
                )
                if n >= 100:
                    self.list_stats_line(cl, n, s)
        finally:
            cl.close()

    def list_stats_line(self, cl: bl.RawClient, n: int, plain: Dict[str, float]) -> None:
        """`list` {stats: true} through the raw client (issue 15): every tool's
        whole-tree figures in one call, read from /proc."""
        req = cl.request("list", {"stats": True})
        xs, size = [], 0
        for _ in range(max(3, self.p.sc_list // 4)):
            t0 = pc()
            cl.send(req)
            size = len(cl.reply_line())
            xs.append(pc() - t0)
        s = bl.summary(xs)
        self.raw.setdefault("row5", {}).setdefault("list_stats", {})[n] = s
        self.add(
            Line(
                "5",
                "`list` {stats: true} raw client at %d tools" % n,
                bl.p50_p99(s),
                "%s (plain `list`)" % bl.fmt_us(plain["p50"]),
                "%s× plain" % bl.fmt_num(s["p50"] / plain["p50"]),
                "≤ 20 ms" if n == 1000 else "",
                s["p50"] <= 0.020 if n == 1000 else None,
                "%d calls" % s["n"],
                "%d KiB reply; IQR/median %.0f%%" % (size // 1024, 100 * s["iqr_rel"]),
            )
        )

    # -- row 6: sidecar start ---------------------------------------------------------

    def row6(self) -> None:
        p = self.p
        a, b = [], []
        hello = (json.dumps({"jsonrpc": "2.0", "id": 1, "method": "hello", "params": {}}, separators=(",", ":")) + "\n").encode()
        for r in range(p.st_reps):
            order = [(self.binary, a), (self.echo, b)]
            if r % 2:
                order.reverse()
            for binary, acc in order:
                t0 = pc()
                cl = self.raw_client(binary)
                cl.send(hello)
                line = cl.reply_line()
                acc.append(pc() - t0)
                if b'"result"' not in line:
                    raise RuntimeError("no hello reply: %r" % line[:200])
                msg = json.loads(line)
                self.reaper.add_session(msg["result"].get("session", "") or "")
                cl.close()
        sa, sb = bl.summary(a), bl.summary(b)
        self.raw["row6"] = {"procmgr": sa, "floor": sb}
        self.add(
            Line(
                "6",
                "sidecar start: spawn → first `hello` reply",
                bl.p50_p99(sa),
                bl.p50_p99(sb),
                "%s×" % bl.fmt_num(sa["p50"] / sb["p50"]),
                "≤ 5 ms",
                sa["p50"] <= 0.005,
                "%d starts each, interleaved" % sa["n"],
                bl.noise(sa, sb),
            )
        )
        # And what a Python user waits for: ProcessManager() until usable.
        from procmgr import ProcessManager

        xs = []
        for _ in range(max(2, p.st_reps // 4)):
            t0 = pc()
            m = ProcessManager(binary=self.binary)
            xs.append(pc() - t0)
            self.reaper.add_session(m.session)
            m.shutdown()
        s = bl.summary(xs)
        self.add(
            Line(
                "6",
                "  ProcessManager() construction (Python client)",
                bl.p50_p99(s),
                "",
                "",
                "",
                None,
                "%d" % s["n"],
                "",
            )
        )


    # -- row 7: the Python client's own cost ------------------------------------------

    def row7(self) -> None:
        """create and list through ProcessManager vs the raw client (issue 14).

        Interleaved in this one process, so both sides see the same machine;
        the CPU figure is time.process_time() over each batch (every thread of
        this process: the client's reader thread included) per call, which a
        loaded machine disturbs far less than the wall time.
        """
        p = self.p
        cpu = time.process_time
        pm = self.manager(self.binary)
        cl = self.raw_client(self.binary)
        seq = [0]

        def client_create() -> float:
            seq[0] += 1
            t0 = pc()
            proc = pm.create("o-%d" % seq[0], ["/bin/true"])
            t = pc() - t0
            proc.stop()
            return t

        def raw_create() -> float:
            seq[0] += 1
            tag = "o-%d" % seq[0]
            t0 = pc()
            cl.call("create", {"tag": tag, "argv": ["/bin/true"]})
            t = pc() - t0
            cl.call("stop", {"tag": tag})
            return t

        list_req = [b""]

        def client_list() -> float:
            t0 = pc()
            pm.list()
            return pc() - t0

        def raw_list() -> float:
            t0 = pc()
            cl.send(list_req[0])
            cl.reply_line()
            return pc() - t0

        def interleave(fns: Dict[str, Callable[[], float]], per_round: int) -> Dict[str, Dict[str, Any]]:
            out = {name: {"wall": [], "cpu": 0.0} for name in fns}
            names = sorted(fns)
            for r in range(p.co_rounds):
                for name in names if r % 2 == 0 else names[::-1]:
                    gc.collect()
                    gc.disable()
                    c0 = cpu()
                    try:
                        out[name]["wall"] += [fns[name]() for _ in range(per_round)]
                    finally:
                        out[name]["cpu"] += cpu() - c0
                        gc.enable()
            for v in out.values():
                v["cpu"] /= max(1, len(v["wall"]))
                v["s"] = bl.summary(v["wall"])
            return out

        try:
            self.hello(cl)
            for _ in range(3):  # warm-up: the first fork, imports, caches
                client_create()
                raw_create()
            per = max(1, p.co_creates // p.co_rounds)
            cr = interleave({"client": client_create, "raw": raw_create}, per)
            c, r = cr["client"]["s"], cr["raw"]["s"]
            over = c["p50"] - r["p50"]
            self.add(
                Line(
                    "7",
                    "create /bin/true: Python client vs raw client (wall)",
                    bl.p50_p99(c),
                    bl.p50_p99(r),
                    "%s%s" % ("+" if over >= 0 else "−", bl.fmt_us(abs(over))),
                    "≤ raw + 100 µs at p50",
                    over <= 100e-6,
                    "%d each, %d interleaved rounds" % (c["n"], p.co_rounds),
                    bl.noise(c, r),
                )
            )
            self.add(
                Line(
                    "7",
                    "  create + stop: CPU time of this process per pair",
                    bl.fmt_us(cr["client"]["cpu"]),
                    bl.fmt_us(cr["raw"]["cpu"]),
                    "+%s" % bl.fmt_us(max(0.0, cr["client"]["cpu"] - cr["raw"]["cpu"])),
                    "(diagnostic)",
                    None,
                    "the calls above",
                    "process_time, every thread (the client's reader too); the raw "
                    "client skips notifications unparsed",
                )
            )
            for i in range(p.co_tools):
                pm.create("l-%d" % i, ["sleep", "600"])
                cl.call("create", {"tag": "l-%d" % i, "argv": ["sleep", "600"]})
            list_req[0] = cl.request("list", {})
            got = len(pm.list())
            if got != p.co_tools:
                raise RuntimeError("list returned %d tools, expected %d" % (got, p.co_tools))
            raw_list()
            per = max(1, p.co_lists // p.co_rounds)
            ls = interleave({"client": client_list, "raw": raw_list}, per)
            c, r = ls["client"]["s"], ls["raw"]["s"]
            ratio = c["p50"] / r["p50"]
            self.add(
                Line(
                    "7",
                    "`list` at %d tools: Python client vs raw client (wall)" % p.co_tools,
                    bl.p50_p99(c),
                    bl.p50_p99(r),
                    "%s×" % bl.fmt_num(ratio),
                    "≤ 2× the raw client",
                    ratio <= 2.0,
                    "%d each, %d interleaved rounds" % (c["n"], p.co_rounds),
                    bl.noise(c, r),
                )
            )
            # What any pure-Python client pays at least: decoding the reply.
            cl.send(list_req[0])
            reply = cl.reply_line()
            gc.collect()
            c0 = cpu()
            for _ in range(per):
                json.loads(reply)
            decode = (cpu() - c0) / per
            self.add(
                Line(
                    "7",
                    "  `list`: CPU time of this process per call",
                    bl.fmt_us(ls["client"]["cpu"]),
                    bl.fmt_us(ls["raw"]["cpu"]),
                    "%s×" % bl.fmt_num(ls["client"]["cpu"] / max(1e-9, ls["raw"]["cpu"])),
                    "(diagnostic)",
                    None,
                    "the calls above",
                    "json.loads of the %d KiB reply alone: %s CPU" % (len(reply) // 1024, bl.fmt_us(decode)),
                )
            )
        finally:
            pm.shutdown()
            cl.close()


# -- measurement helpers ----------------------------------------------------------


def _time_calls(f: Callable[[str], Any], arg: str, n: int) -> List[float]:
    xs = []
    gc.disable()
    try:
        for _ in range(n):
            t0 = pc()
            f(arg)
            xs.append(pc() - t0)
    finally:
        gc.enable()
    return xs


def _raw_rt(cl: bl.RawClient, req: bytes) -> None:
    cl.send(req)
    cl.reply_line()


def _time_raw(cl: bl.RawClient, req: bytes, n: int) -> List[float]:
    xs = []
    send, reply = cl.send, cl.reply_line
    gc.disable()
    try:
        for _ in range(n):
            t0 = pc()
            send(req)
            reply()
            xs.append(pc() - t0)
    finally:
        gc.enable()
    return xs


def _throughput(f: Callable[[str], Any], arg: str, threads: int, secs: float) -> float:
    counts = [0] * threads
    barrier = threading.Barrier(threads + 1)
    stop = threading.Event()

    def worker(i: int) -> None:
        barrier.wait()
        n = 0
        while not stop.is_set():
            f(arg)
            n += 1
        counts[i] = n

    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = pc()
    time.sleep(secs)
    stop.set()
    for t in ts:
        t.join()
    return sum(counts) / (pc() - t0)


def _pipelined(cl: bl.RawClient, window: int, secs: float) -> float:
    """Keep `window` requests in flight on one pipe; count replies per second."""
    req = cl.request("running", {"tag": "tp"})
    cl.send(req * window)
    sent, done = window, 0
    t0 = pc()
    end = t0 + secs
    while True:
        chunk = os.read(cl.rfd, 1 << 16)
        if not chunk:
            raise EOFError("the program closed its stdout")
        k = chunk.count(b"\n")
        done += k
        if pc() >= end:
            break
        if k:
            cl.send(req * k)
            sent += k
    elapsed = pc() - t0
    counted = done
    while done < sent:  # drain what is still in flight
        chunk = os.read(cl.rfd, 1 << 16)
        if not chunk:
            raise EOFError("the program closed its stdout")
        done += chunk.count(b"\n")
    cl.buf = b""
    return counted / elapsed


def _read_json_line(p: subprocess.Popen, timeout: float) -> Dict[str, Any]:
    fd = p.stdout.fileno()
    buf = b""
    end = time.monotonic() + timeout
    while b"\n" not in buf:
        left = end - time.monotonic()
        if left <= 0:
            raise RuntimeError("host did not get ready in %.0f s" % timeout)
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                err = p.stderr.read().decode(errors="replace") if p.poll() is not None else ""
                raise RuntimeError("host exited before it was ready: %s" % err[-2000:])
            buf += chunk
    return json.loads(buf.split(b"\n", 1)[0])


def _log_notice(path: str, t_kill_wall: float) -> Optional[float]:
    """Seconds from the kill to the sidecar's 'host died' log line."""
    import datetime

    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                for line in f:
                    if "host died" in line or "stdin closed" in line:
                        ts = line.split(" ", 1)[0]
                        if ts.startswith("time="):
                            t = datetime.datetime.fromisoformat(ts[5:]).timestamp()
                            return t - t_kill_wall
        except OSError:
            pass
        time.sleep(0.05)
    return None


def _k(x: float) -> str:
    if x >= 1000:
        return "%.1fk" % (x / 1000)
    return "%.0f" % x


def _met(m: Optional[bool]) -> str:
    return {True: "met", False: "MISSED", None: ""}[m]


# -- output -------------------------------------------------------------------------

ROW_TITLES = {
    "1": "RPC round trip",
    "2": "Throughput",
    "3": "Spawn",
    "4": "Cleanup after host death",
    "5": "Scale (1000 tools)",
    "6": "Sidecar start",
    "7": "Python client overhead",
}


def markdown(b: Bench, mach: Dict[str, str], elapsed: float, mode: str) -> str:
    out = []
    out.append("# procmgr benchmarks\n")
    out.append(
        "Generated by `make bench` (`python3 bench/run.py --out docs/benchmarks.md`), %s mode, "
        "in %.0f s on %s. Every figure is set against a baseline measured in the same run "
        "(absolute times on these shared 2-core machines move from run to run; the ratios are what "
        "to compare). Times are p50 / p99 unless said otherwise.\n"
        % (mode, elapsed, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    )
    out.append("## Machine\n")
    out.append("| | |\n|---|---|")
    for k, label in (
        ("cpu", "CPU"), ("nproc", "cores (nproc)"), ("memory", "memory"), ("kernel", "kernel"),
        ("go", "Go"), ("python", "Python"), ("loadavg", "load average at start"),
        ("loadavg_end", "load average at end"),
        ("features", "sidecar features"),
    ):
        if k in mach:
            out.append("| %s | %s |" % (label, mach[k]))
    out.append("")
    out.append("## Results\n")
    out.append("| row | measure | procmgr | baseline | ratio | goal | met | repetitions | noise |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for l in b.lines:
        out.append(
            "| %s | %s | %s | %s | %s | %s | %s | %s | %s |"
            % (l.row, l.what.strip(), l.value, l.baseline, l.ratio, l.goal,
               {True: "**met**", False: "**missed**", None: ""}[l.met], l.reps, l.noise)
        )
    for row, err in sorted(b.errors.items()):
        out.append("| %s | %s | error: %s | | | | | | |" % (row, ROW_TITLES.get(row, ""), err.replace("|", "/")))
    out.append("")
    goals = [l for l in b.lines if l.met is not None]
    met = [l for l in goals if l.met]
    out.append("## Goals\n")
    out.append("%d of %d goals met in this run.\n" % (len(met), len(goals)))
    for l in goals:
        out.append("- row %s, %s: %s (%s; goal %s)" % (l.row, l.what.strip(), "met" if l.met else "**missed**", l.ratio or l.value, l.goal))
    out.append("")
    missed = [l for l in goals if not l.met]
    if missed:
        out.append("Why each missed goal is missed, and the change that would close it, is in the last section.\n")
    if b.notes:
        out.append("## Notes from this run\n")
        for row in sorted(b.notes):
            for n in b.notes[row]:
                out.append("- row %s: %s" % (row, n))
        out.append("")
    out.append("## How to run\n")
    out.append(
        "`make bench` (or `go build -o bin/procmgr . && python3 bench/run.py --out docs/benchmarks.md`) "
        "runs every row and rewrites this file; `python3 bench/run.py --smoke` runs every row with tiny "
        "counts in well under 30 s and writes nothing (for CI). `--rows 1,4` runs some rows; "
        "`--json FILE` keeps every raw figure. The floor program is `bench/echo`, built into a "
        "temporary directory by the run. Profiling aid: `bench/micro` (Go microbenchmarks of "
        "the sidecar's parts, in process).\n"
    )
    analysis = os.path.join(HERE, "analysis.md")
    if os.path.exists(analysis):
        with open(analysis) as f:
            out.append(f.read())
    return "\n".join(out) + "\n"


def print_table(b: Bench) -> None:
    print()
    print("%-3s %-60s %-26s %-30s %-20s %s" % ("row", "measure", "procmgr", "baseline", "ratio", "goal"))
    for l in b.lines:
        print(
            "%-3s %-60s %-26s %-30s %-20s %s %s"
            % (l.row, l.what, l.value, l.baseline, l.ratio, l.goal, _met(l.met))
        )
    for row, err in sorted(b.errors.items()):
        print("%-3s ERROR %s" % (row, err))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=os.environ.get("PROCMGR_BIN") or os.path.join(REPO, "bin", "procmgr"))
    ap.add_argument("--out", help="write the Markdown report here (e.g. docs/benchmarks.md)")
    ap.add_argument("--json", help="write every raw figure here")
    ap.add_argument("--smoke", action="store_true", help="every row with tiny counts (< 30 s), for CI")
    ap.add_argument("--rows", default="1,2,3,4,5,6,7", help="comma-separated rows to run")
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    if not os.access(binary, os.X_OK):
        print("procmgr binary %s not found; build it with `go build -o bin/procmgr .`" % binary, file=sys.stderr)
        return 2

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    t_start = pc()
    b = Bench(binary, Params(a.smoke))
    mach = bl.machine()
    rc = 0
    try:
        print("procmgr bench (%s): %s, %s cores, kernel %s, %s, Python %s"
              % ("smoke" if a.smoke else "full", mach["cpu"], mach["nproc"], mach["kernel"], mach["go"], mach["python"]),
              flush=True)
        b.echo = bl.build_echo(b.tmp)
        cl = b.raw_client(binary)
        try:
            h = cl.call("hello", {})
            mach["features"] = ", ".join(h.get("features") or [])
            b.reaper.add_session(h.get("session", ""))
        finally:
            cl.close()
        for row in a.rows.split(","):
            row = row.strip()
            fn = getattr(b, "row" + row, None)
            if fn is None:
                print("no row %r" % row, file=sys.stderr)
                return 2
            print("row %s: %s" % (row, ROW_TITLES[row]), flush=True)
            t = pc()
            try:
                fn()
            except Exception as exc:  # a broken row is reported, the others still run
                traceback.print_exc()
                b.errors[row] = "%s: %s" % (type(exc).__name__, exc)
                rc = 1
            finally:
                left = b.reaper.kill_all()
                if left:
                    b.note(row, "%d process(es) of the row were still running afterwards and were killed" % left)
                    print("  (cleaned up %d leftover process(es))" % left, flush=True)
            print("  row %s took %.1f s" % (row, pc() - t), flush=True)
    finally:
        b.reaper.kill_all()
        bl.rmtree(b.tmp)
    elapsed = pc() - t_start
    with open("/proc/loadavg") as f:
        mach["loadavg_end"] = " ".join(f.read().split()[:3])
    print_table(b)
    print("\ntotal %.1f s (%s mode)" % (elapsed, "smoke" if a.smoke else "full"))
    if a.out:
        with open(a.out, "w") as f:
            f.write(markdown(b, mach, elapsed, "smoke" if a.smoke else "full"))
        print("wrote", a.out)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": mach, "raw": b.raw, "elapsed_s": elapsed}, f, indent=1, default=str)
    return rc


if __name__ == "__main__":
    sys.exit(main())
