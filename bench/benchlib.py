"""Shared pieces of the procmgr benchmarks: statistics, /proc readers, a
minimal synchronous line-JSON client, and the clean-up of every process a
bench run starts.

Standard library only (Python 3.8+). Linux only: figures come from /proc.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

# Every process a bench run starts inherits this variable (set in os.environ
# before anything is spawned; the Python client copies os.environ into each
# tool's environment, and the sidecar passes its own on). The clean-up finds
# leftovers by it, whatever their process group or parent.
MARK_VAR = "PROCMGR_BENCH_MARK"

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- statistics ---------------------------------------------------------------


def quantile(xs: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between order statistics."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def median(xs: Sequence[float]) -> float:
    return quantile(xs, 0.5)


def summary(xs: Sequence[float]) -> Dict[str, float]:
    """n, median, p99, and the noise: interquartile range relative to the median."""
    med = median(xs)
    iqr = quantile(xs, 0.75) - quantile(xs, 0.25)
    return {
        "n": len(xs),
        "p50": med,
        "p99": quantile(xs, 0.99),
        "min": min(xs) if xs else float("nan"),
        "max": max(xs) if xs else float("nan"),
        "iqr_rel": (iqr / med) if med else float("nan"),
    }


def spread(xs: Sequence[float]) -> str:
    """'lo–hi' of a few per-round figures (how much a ratio moved between rounds)."""
    if not xs:
        return "n/a"
    return "%s–%s" % (fmt_num(min(xs)), fmt_num(max(xs)))


def fmt_num(x: float) -> str:
    if x != x:  # nan
        return "n/a"
    if x == float("inf"):
        return "∞"
    if abs(x) >= 100:
        return "%.0f" % x
    if abs(x) >= 10:
        return "%.1f" % x
    return "%.2f" % x


def p50_p99(s: dict) -> str:
    """A summary's median and p99, as "p50 / p99" in readable units."""
    return "%s / %s" % (fmt_us(s["p50"]), fmt_us(s["p99"]))


def noise(a: dict, b: dict) -> str:
    """How noisy two summaries were: interquartile range over the median."""
    return "IQR/median %.0f%% vs %.0f%%" % (100 * a["iqr_rel"], 100 * b["iqr_rel"])


def fmt_us(seconds: float) -> str:
    """A duration in µs (or ms / s when large)."""
    if seconds != seconds:
        return "n/a"
    if seconds == float("inf"):
        return "∞"
    us = seconds * 1e6
    if us < 1000:
        return "%.0f µs" % us
    if us < 1e6:
        return "%.1f ms" % (us / 1000) if us < 1e5 else "%.0f ms" % (us / 1000)
    return "%.2f s" % (us / 1e6)


# -- /proc --------------------------------------------------------------------


def proc_stat(pid: int) -> Optional[Tuple[str, int, int, int, int, int]]:
    """(state, ppid, pgid, utime+stime ticks, starttime, rss pages) or None if gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    i = data.rfind(b")")
    f = data[i + 2 :].split()
    return (
        f[0].decode(),
        int(f[1]),
        int(f[2]),
        int(f[11]) + int(f[12]),
        int(f[19]),
        int(f[21]),
    )


def alive(pid: int, start: Optional[int] = None) -> bool:
    """The process exists and has not exited (a zombie counts as gone).

    With ``start`` (its starttime), a recycled pid is not mistaken for it.
    """
    st = proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return start is None or st[4] == start


def status_kb(pid: int, field: str) -> int:
    """A 'kB' field of /proc/<pid>/status (VmRSS, VmHWM, ...); -1 if missing."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def cpu_usage(pid: int) -> Dict[str, float]:
    """CPU consumed by every thread of pid so far.

    ``ns``: on-CPU time from /proc/<pid>/task/*/schedstat (nanoseconds,
    unlike stat's 10 ms ticks); ``ticks_s``: utime+stime from /proc/<pid>/stat
    in seconds; ``switches``: voluntary + involuntary context switches of all
    threads (each one is a wake-up: the count that shows a polling loop).
    """
    ns = 0
    switches = 0
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        tids = []
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                ns += int(f.read().split()[0])
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        switches += int(line.split()[1])
        except OSError:
            pass
    st = proc_stat(pid)
    return {
        "ns": float(ns),
        "ticks_s": (st[3] / CLK_TCK) if st else float("nan"),
        "switches": float(switches),
        "threads": float(len(tids)),
    }


def pids_with_env(name: str, value: Optional[str] = None) -> List[int]:
    """Live pids whose environment has name (=value, if given). Skips ourselves."""
    key = (name + "=").encode()
    want = None if value is None else key + value.encode()
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        pid = int(d)
        if pid == me:
            continue
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                env = f.read()
        except OSError:
            continue
        for kv in env.split(b"\0"):
            if kv.startswith(key) and (want is None or kv == want):
                out.append(pid)
                break
    return out


def children_of(pid: int) -> List[int]:
    """Direct children, from /proc/<pid>/task/*/children."""
    out: List[int] = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                    out += [int(x) for x in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


# -- clean-up -----------------------------------------------------------------


class Reaper:
    """Kills every process of this bench run, found by its mark, and removes
    the cgroups of sessions whose sidecar could not remove them itself."""

    def __init__(self) -> None:
        self.mark = os.urandom(8).hex()
        os.environ[MARK_VAR] = self.mark
        self.sessions: List[str] = []
        self.groups: List[int] = []

    def add_session(self, session: str) -> None:
        if session and re.fullmatch(r"[0-9a-f]{8,64}", session):
            self.sessions.append(session)

    def add_group(self, pgid: int) -> None:
        if pgid > 1 and pgid != os.getpgrp():
            self.groups.append(pgid)

    def leftovers(self) -> List[int]:
        return pids_with_env(MARK_VAR, self.mark)

    def kill_all(self) -> int:
        """SIGKILL every marked process and every group we made; return how many were found."""
        found = 0
        for _ in range(20):
            pids = [p for p in self.leftovers() if p > 1 and p != os.getpid()]
            for pgid in self.groups:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except OSError:
                    pass
            if not pids:
                break
            found = max(found, len(pids))
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.05)
        self._reap_children()
        self._remove_cgroups()
        return found

    def _reap_children(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def _remove_cgroups(self) -> None:
        mount = cgroup2_mount()
        if not mount:
            return
        for session in self.sessions:
            base = os.path.join(mount, "procmgr-" + session)
            if not os.path.isdir(base):
                continue
            for root, dirs, _ in os.walk(base, topdown=False):
                for d in dirs:
                    try:
                        os.rmdir(os.path.join(root, d))
                    except OSError:
                        pass
            try:
                os.rmdir(base)
            except OSError:
                pass


def cgroup2_mount() -> str:
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                if post.split()[:1] == ["cgroup2"]:
                    return pre.split()[4]
    except OSError:
        pass
    return ""


# -- a minimal synchronous line-JSON client -----------------------------------


class RawClient:
    """Drives a line-JSON-RPC program (procmgr or the echo floor) with one
    blocking write and one blocking read per call: no threads, no Events.
    It measures the program and the pipe with as little Python as possible."""

    def __init__(self, argv: Sequence[str], stderr: Any = subprocess.DEVNULL) -> None:
        self.t_spawn = time.perf_counter()
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            bufsize=0,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.wfd = self.proc.stdin.fileno()
        self.rfd = self.proc.stdout.fileno()
        self.buf = b""
        self.next_id = 0

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.wfd, view)
            view = view[n:]

    def readline(self) -> bytes:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 1 :]
                return line
            chunk = os.read(self.rfd, 1 << 20)
            if not chunk:
                raise EOFError("the program closed its stdout")
            self.buf += chunk

    def request(self, method: str, params: Dict[str, Any]) -> bytes:
        self.next_id += 1
        return (
            json.dumps(
                {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params},
                separators=(",", ":"),
            ).encode()
            + b"\n"
        )

    def reply_line(self) -> bytes:
        """The next line that is not a notification."""
        while True:
            line = self.readline()
            if b'"method"' in line and b'"id"' not in line:
                continue  # a notification (exited)
            return line

    def call(self, method: str, params: Dict[str, Any]) -> Any:
        self.send(self.request(method, params))
        msg = json.loads(self.reply_line())
        if msg.get("error"):
            raise RuntimeError("%s: %s" % (method, msg["error"]))
        return msg.get("result")

    def close(self, timeout: float = 10.0) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        try:
            self.proc.stdout.close()
        except OSError:
            pass


# -- the machine --------------------------------------------------------------


def machine() -> Dict[str, str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = "%.0f GiB" % (kb / 2**20)
    except (OSError, ValueError, IndexError):
        pass
    go = "unknown"
    try:
        go = subprocess.run(["go", "version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "go": go,
        "python": sys.version.split()[0],
        "loadavg": load,
    }


def build_echo(tmpdir: str) -> str:
    """Build bench/echo into tmpdir and return the binary's path."""
    out = os.path.join(tmpdir, "echo")
    subprocess.run(
        ["go", "build", "-o", out, "./bench/echo"],
        cwd=REPO,
        check=True,
        timeout=300,
    )
    return out


def make_tmpdir() -> str:
    return tempfile.mkdtemp(prefix="procmgr-bench-")


def rmtree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
