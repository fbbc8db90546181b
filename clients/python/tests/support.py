"""Shared helpers for the procmgr client tests.

Everything here looks at the operating system (/proc, kill(2), exit statuses),
never at what the client says, so the tests can catch the client lying.

Each test run marks its environment with PROCMGR_TEST_RUN=<uuid>.  The
client hands the host's current environment to every tool, and child host
scripts and sidecars inherit it, so ``leftovers()`` finds every process this
run started, wherever it was reparented to.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
import uuid
from typing import Dict, Iterable, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT_DIR = os.path.dirname(HERE)  # clients/python
REPO = os.path.dirname(os.path.dirname(CLIENT_DIR))

RUN_MARK = "PROCMGR_TEST_RUN"
RUN_ID = os.environ.get(RUN_MARK) or uuid.uuid4().hex
os.environ[RUN_MARK] = RUN_ID

BIN = os.environ.get("PROCMGR_BIN") or os.path.join(REPO, "bin", "procmgr")

#: Deadlines only keep a broken test from hanging; no test asserts on timing.
DEADLINE = 20.0

PYTHON = sys.executable


def require_binary() -> str:
    """The sidecar binary; a missing one fails the run loudly (never a silent skip)."""
    if not (os.path.isfile(BIN) and os.access(BIN, os.X_OK)):
        raise RuntimeError(
            "procmgr sidecar not found at %s: build it with `go build -o bin/procmgr .` "
            "at the repository root, or set PROCMGR_BIN" % BIN
        )
    return BIN


# -- /proc ---------------------------------------------------------------------


def stat(pid: int) -> Optional[Dict[str, object]]:
    """Fields of /proc/<pid>/stat, or None if there is no such process."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    rparen = data.rindex(")")
    fields = data[rparen + 2 :].split()
    return {
        "comm": data[data.index("(") + 1 : rparen],
        "state": fields[0],
        "ppid": int(fields[1]),
        "pgrp": int(fields[2]),
        "session": int(fields[3]),
        "starttime": int(fields[19]),
    }


#: The comm (/proc/<pid>/stat) of a sidecar: its binary's name, as the kernel cuts it.
SIDECAR_COMM = os.path.basename(BIN)[:15]


class Proc:
    """A process identity that survives pid reuse: (pid, start time)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        st = stat(pid)
        self.starttime = st["starttime"] if st else None
        self.comm = st["comm"] if st else "?"

    def state(self) -> str:
        """What /proc/<pid>/stat says of this very process: ``"running"``
        (any state but Z/X: also sleeping, stopped, ...), ``"zombie:<ppid>"``
        (it exited and its parent ppid has not reaped it yet) or ``"gone"``
        (no such process, or its pid now names another one)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return "gone"
        except PermissionError:  # pragma: no cover - we are root
            pass
        st = stat(self.pid)
        if st is None or st["starttime"] != self.starttime:
            return "gone"
        if st["state"] in ("Z", "X", "x"):
            return "zombie:%d" % st["ppid"]
        return "running"

    def running(self) -> bool:
        """True if this very process exists and is not a zombie. A zombie is
        not running, but it is not gone either: see state() and gone()."""
        return self.state() == "running"

    def gone(self) -> bool:
        """True once this process has exited and procmgr owes it nothing: it
        is reaped, or it is a zombie whose parent is no procmgr sidecar (this
        test, a host script, a kernel manager: reaping it is their business,
        often done later). A zombie of a sidecar is not gone: the sidecar
        must reap its tools and the orphans it adopts as subreaper."""
        state = self.state()
        if state == "gone":
            return True
        if not state.startswith("zombie:"):
            return False
        parent = stat(int(state.split(":")[1]))
        return parent is None or parent["comm"] != SIDECAR_COMM

    def __repr__(self) -> str:
        return "%d(%s, %s)" % (self.pid, self.comm, self.state())


def running(pid: int) -> bool:
    """kill(pid, 0) succeeds and /proc says it is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    st = stat(pid)
    return st is not None and st["state"] not in ("Z", "X", "x")


def ignores_signal(pid: int, sig: int) -> bool:
    """/proc/<pid>/status says ``pid`` ignores ``sig`` (SigIgn)."""
    for line in read_file("/proc/%d/status" % pid).splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    return False


def children(pid: int) -> List[int]:
    out: List[int] = []
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for t in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def descendants(pid: int) -> List[int]:
    out: List[int] = []
    todo = [pid]
    while todo:
        for c in children(todo.pop()):
            out.append(c)
            todo.append(c)
    return out


def environ(pid: int) -> Dict[str, str]:
    """A process's initial environment.

    create returns once exec is past its point of no return, which can be a
    moment before the kernel publishes the new image's environment: it then
    reads empty. An empty reading is taken again for up to 100 ms.
    """
    end = time.monotonic() + 0.1
    while True:
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                data = f.read()
        except OSError:
            return {}
        if data or time.monotonic() > end:
            break
        time.sleep(0.001)
    env = {}
    for item in data.split(b"\0"):
        if b"=" in item:
            k, v = item.split(b"=", 1)
            env[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
    return env


def cmdline(pid: int) -> List[str]:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def read_file(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def read_link(path: str) -> str:
    """os.readlink, or "" when the link cannot be read (the process is gone)."""
    try:
        return os.readlink(path)
    except OSError:
        return ""


def all_threads_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped by a signal (state T)."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return False
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # a thread that is gone
        if state != "T":
            return False
    return True


def wait_until(pred, timeout: float = DEADLINE, interval: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval)


def wait_gone(procs: Iterable[Proc], timeout: float = DEADLINE) -> List[Proc]:
    """Wait until every one of ``procs`` is gone (Proc.gone: reaped, or a
    zombie no sidecar owes a reaping); return those that are not at the
    deadline, their repr saying running or zombie and whose."""
    procs = list(procs)
    left = procs

    def none_left() -> bool:
        # One look decides both the wait and the answer: a zombie whose
        # parent is a member being killed counts as gone, and a moment later
        # is the sidecar's (re-parented to the subreaper) and not gone until
        # reaped; judging twice could wait for the one and report the other.
        nonlocal left
        left = [p for p in procs if not p.gone()]
        return not left

    wait_until(none_left, timeout)
    return left


def leftovers() -> List[Tuple[int, str, bool]]:
    """Processes of this test run still running: (pid, cmdline, carries PROCMGR_SESSION)."""
    me = os.getpid()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid == me:
            continue
        env = environ(pid)
        if env.get(RUN_MARK) != RUN_ID:
            continue
        if not running(pid):
            continue
        out.append((pid, " ".join(cmdline(pid))[:120], "PROCMGR_SESSION" in env))
    return out


def assert_no_leftovers(where: str) -> None:
    """Fail if any sidecar, tool or child host of this run still runs (after a grace period)."""
    wait_until(lambda: not leftovers(), timeout=DEADLINE)
    left = leftovers()
    if left:
        raise AssertionError(
            "%s: processes of this test run survived: %s"
            % (where, "; ".join("pid %d %s%s" % (p, c, " [tool]" if s else "") for p, c, s in left))
        )


# -- tools ---------------------------------------------------------------------

#: A tool that ignores SIGTERM (the ignore survives exec).
IGNORE_TERM = ["sh", "-c", "trap '' TERM; exec sleep 300"]
#: A tool with two grandchildren... well, two children of the tool: a tree.
TREE = ["sh", "-c", "sleep 300 & sleep 301 & wait"]


def tree_members(pid: int, expect: int = 2) -> List[int]:
    """Wait until the tool ``pid`` has ``expect`` descendants; return them."""
    assert wait_until(lambda: len(descendants(pid)) >= expect), (
        "tool %d never got %d children" % (pid, expect)
    )
    return descendants(pid)


# -- child host scripts ----------------------------------------------------------


def host_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = CLIENT_DIR + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PROCMGR_BIN"] = BIN
    env.pop("PYTHONWARNINGS", None)
    if extra:
        env.update(extra)
    return env


def write_script(code: str) -> str:
    fd, path = tempfile.mkstemp(prefix="procmgr-test-", suffix=".py")
    with os.fdopen(fd, "w") as f:
        f.write(textwrap.dedent(code))
    return path


def run_host(code: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """Run ``code`` as a separate Python host process; capture stdout and stderr."""
    path = write_script(code)
    try:
        return subprocess.run(
            [PYTHON, path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=host_env(kw.pop("env", None)),
            timeout=timeout,
            **kw,
        )
    finally:
        os.unlink(path)


def start_host(code: str, **kw) -> Tuple[subprocess.Popen, str]:
    """Start ``code`` as a host process with piped stdout; the caller reads and reaps it."""
    path = write_script(code)
    proc = subprocess.Popen(
        [PYTHON, path],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=host_env(kw.pop("env", None)),
        **kw,
    )
    return proc, path


def read_json_line(proc: subprocess.Popen, timeout: float = DEADLINE) -> dict:
    """The first stdout line of ``proc`` as JSON (fails instead of hanging)."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        proc.kill()
        raise AssertionError("host printed nothing within %s s" % timeout)
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise AssertionError(
            "host exited (%s) before printing: %s" % (proc.returncode, proc.stderr.read().decode())
        )
    return json.loads(line)


class SidecarTestCase(unittest.TestCase):
    """A TestCase that needs the sidecar binary and fails if any process of
    this test run is left running after its tests."""

    @classmethod
    def setUpClass(cls) -> None:
        require_binary()

    @classmethod
    def tearDownClass(cls) -> None:
        assert_no_leftovers(cls.__name__)


class ManagerTestCase(SidecarTestCase):
    """A SidecarTestCase with a fresh ProcessManager per test, always shut down."""

    manager_kwargs: Dict[str, object] = {}

    def setUp(self) -> None:
        from procmgr import ProcessManager

        self.pm = ProcessManager(BIN, **self.manager_kwargs)
        # LIFO: shut down first, then remove the log dir a dead sidecar leaves behind
        self.addCleanup(shutil.rmtree, self.pm._connection().tmpdir, True)
        self.addCleanup(self.pm.shutdown)

    def tag(self, suffix: str = "") -> str:
        return "%s%s" % (self._testMethodName, suffix)
