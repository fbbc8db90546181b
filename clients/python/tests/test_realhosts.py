"""What real hosts found (issue 11), the client's part: interrupt-safe create,
nothing left on disk, a watchdog that lets tools clean up, zero means zero,
argument mistakes named.

Every assertion is on what the OS shows (/proc, the file system), never on
what the client or the sidecar says.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

from tests import support
from tests.support import BIN, DEADLINE, PYTHON, Proc, wait_gone, wait_until

from procmgr import (
    NoSuchTagError,
    ProcessManager,
    ProcMgrTimeoutError,
    Ready,
    Restart,
    SpawnError,
    output_option,
)

BAD_SECONDS = (float("nan"), float("inf"), float("-inf"), -1, -0.5)


def read_pid(path: str) -> int:
    """The pid a tool wrote to ``path`` (waiting for it, with a deadline)."""
    assert wait_until(lambda: _complete(path)), "no pid was written to %s" % path
    with open(path) as f:
        return int(f.read().split()[0])


def _complete(path: str) -> bool:
    try:
        with open(path) as f:
            return f.read().endswith("\n")
    except OSError:
        return False


def cgroup_parent(pid: int) -> str:
    """The cgroup v2 directory ``pid`` is in (where its session cgroups are made)."""
    mount = ""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2":
                mount = left.split()[4]
                break
    with open("/proc/%d/cgroup" % pid) as f:
        for line in f:
            if line.startswith("0::"):
                return os.path.join(mount, line.strip()[3:].lstrip("/"))
    raise AssertionError("no cgroup v2 line for pid %d" % pid)


class InterruptSafeCreateTest(support.SidecarTestCase):
    """Ctrl-C during a waiting create stops the tool and frees the tag before
    the KeyboardInterrupt propagates (issue 11, item 4)."""

    def test_keyboard_interrupt_in_a_ready_wait_stops_the_tool_and_frees_the_tag(self) -> None:
        work = tempfile.mkdtemp(prefix="procmgr-interrupt-")
        self.addCleanup(shutil.rmtree, work, True)
        pidfile = os.path.join(work, "pid")
        # The host waits for a readiness that never comes (300 s); the test
        # presses Ctrl-C (SIGINT) once the tool runs.
        host, script = support.start_host(
            """
            import json, os, signal, sys, time
            from procmgr import ProcessManager, Ready, TagInUseError
            # Ctrl-C raises KeyboardInterrupt, as in a terminal, even when this
            # host was started with SIGINT ignored (a background job of a
            # script, as in make stress-parallel).
            signal.signal(signal.SIGINT, signal.default_int_handler)
            pm = ProcessManager()
            print(json.dumps({"sidecar": pm.pid}), flush=True)
            try:
                pm.create("t", ["sh", "-c", "echo $$ > %(pidfile)s.tmp; mv %(pidfile)s.tmp %(pidfile)s; exec sleep 300"],
                          ready=Ready.path("never-there", timeout=300))
                result = {"interrupted": False}
            except KeyboardInterrupt:
                # Nothing waited here: the tag must be free already, and the
                # tool gone, as the OS says (not only the sidecar).
                pid = int(open("%(pidfile)s").read())
                try:
                    with open("/proc/%%d/stat" %% pid) as f:
                        alive = f.read().rsplit(")", 1)[1].split()[0] != "Z"
                except OSError:
                    alive = False
                result = {"interrupted": True, "running": pm.running("t"), "tool_alive": alive}
                try:
                    p = pm.create("t", ["sleep", "300"])
                    result["retry_pid"] = p.pid
                    p.stop()
                except TagInUseError as exc:
                    result["retry"] = str(exc)
            print(json.dumps(result), flush=True)
            pm.shutdown()
            """ % {"pidfile": pidfile}
        )
        self.addCleanup(os.unlink, script)
        self.addCleanup(host.kill)
        support.read_json_line(host)
        tool = Proc(read_pid(pidfile))
        self.assertTrue(tool.running(), "the tool should run while create waits")
        host.send_signal(signal.SIGINT)
        result = support.read_json_line(host, timeout=DEADLINE)
        out, err = host.communicate(timeout=DEADLINE)
        self.assertTrue(result.get("interrupted"), "create was not interrupted: %r %s" % (result, err))
        self.assertFalse(result["running"], "the tag was still in use after the interrupt")
        self.assertFalse(result["tool_alive"], "the tool still ran when the KeyboardInterrupt reached the host")
        self.assertIn("retry_pid", result, "a retry with the same tag failed: %r" % result)
        self.assertEqual(wait_gone([tool]), [], "the interrupted create's tool survived")
        self.assertEqual(host.returncode, 0, err.decode())


class TempDirTest(support.SidecarTestCase):
    """The session's temporary directory goes when the session ends, however
    the host died (issue 11, item 6)."""

    def test_sigkilled_host_leaves_no_temp_dir(self) -> None:
        host, script = support.start_host(
            """
            import json, time
            from procmgr import ProcessManager
            pm = ProcessManager()
            p = pm.create("t", ["sleep", "300"])
            print(json.dumps({"tmpdir": pm._sidecar.tmpdir, "tool": p.pid, "sidecar": pm.pid}), flush=True)
            time.sleep(300)
            """
        )
        self.addCleanup(os.unlink, script)
        self.addCleanup(host.kill)
        info = support.read_json_line(host)
        procs = [Proc(info["tool"]), Proc(info["sidecar"])]
        self.assertTrue(os.path.isdir(info["tmpdir"]))
        host.kill()
        host.communicate(timeout=DEADLINE)
        self.assertEqual(wait_gone(procs), [], "survivors of the SIGKILLed host")
        self.assertTrue(
            wait_until(lambda: not os.path.exists(info["tmpdir"])),
            "the SIGKILLed host's temp dir %s is still there: %s"
            % (info["tmpdir"], _listing(info["tmpdir"])),
        )

    def test_sigkilled_sidecar_temp_dir_is_removed_by_the_watchdog(self) -> None:
        pm = ProcessManager(BIN)
        self.addCleanup(pm.shutdown)
        tmpdir = pm._sidecar.tmpdir
        self.assertIn("watchdog", pm.features)
        watchdog = Proc(pm._sidecar.hello["watchdog_pid"])
        # A daemonized grandchild: only the watchdog can take it.
        p = pm.create("t", ["sh", "-c", "setsid sleep 300 & exec sleep 301"])
        tree = [Proc(pid) for pid in support.tree_members(p.pid, expect=1)] + [Proc(p.pid)]
        os.kill(pm.pid, signal.SIGKILL)
        self.assertEqual(wait_gone(tree + [watchdog]), [], "survivors of the SIGKILLed sidecar")
        self.assertTrue(
            wait_until(lambda: not os.path.exists(tmpdir)),
            "the watchdog left the SIGKILLed sidecar's temp dir %s: %s" % (tmpdir, _listing(tmpdir)),
        )

    def test_shutdown_removes_the_temp_dir_but_keeps_a_log_file_asked_for(self) -> None:
        work = tempfile.mkdtemp(prefix="procmgr-logfile-")
        self.addCleanup(shutil.rmtree, work, True)
        log = os.path.join(work, "sidecar.log")
        pm = ProcessManager(BIN, log_file=log)
        self.addCleanup(pm.shutdown)
        tmpdir = pm._sidecar.tmpdir
        self.assertEqual(pm.log_path, log)
        pm.create("t", ["true"])
        pm.shutdown()
        self.assertFalse(os.path.exists(tmpdir), "shutdown left %s" % tmpdir)
        with open(log) as f:
            self.assertIn("serving", f.read(), "the log file asked for is empty")


class LitterSweepTest(support.SidecarTestCase):
    """A starting sidecar removes what sessions provably over left behind
    (temp dir, empty session cgroup), never a live neighbour's (item 6)."""

    def test_next_start_removes_a_dead_sessions_litter_and_keeps_a_live_neighbours(self) -> None:
        # The sessions of this test keep their temp dirs in a root of their
        # own: a starting sidecar sweeps the root its own temp dir is in, so
        # another suite's sessions (in the system's) cannot take the dead
        # session's dir before the start this test makes does.
        root = tempfile.mkdtemp(prefix="sweep-root-")
        self.addCleanup(shutil.rmtree, root, True)
        saved, tempfile.tempdir = tempfile.tempdir, root
        self.addCleanup(setattr, tempfile, "tempdir", saved)
        # A session whose sidecar and watchdog are both SIGKILLed leaves its
        # temp dir and (in cgroup mode) its emptied session cgroup.
        dead = ProcessManager(BIN)
        self.addCleanup(dead.shutdown)
        dead_tmp = dead._sidecar.tmpdir
        dead_session = dead.session
        cgroups = "cgroup" in dead.features
        p = dead.create("t", ["sleep", "300"])
        parent = cgroup_parent(dead.pid) if cgroups else ""
        dead_cg = os.path.join(parent, "procmgr-" + dead_session)
        if cgroups:
            self.assertTrue(os.path.isdir(dead_cg), "no session cgroup %s" % dead_cg)
        victims = [Proc(dead._sidecar.hello["watchdog_pid"]), Proc(dead.pid), Proc(p.pid)]
        # Stopped first, the sidecar cannot start a new watchdog (it restarts
        # one that dies) between the two kills.
        os.kill(dead.pid, signal.SIGSTOP)
        self.assertTrue(
            wait_until(lambda: (support.stat(dead.pid) or {}).get("state") == "T"),
            "the sidecar never showed as stopped",
        )
        os.kill(victims[0].pid, signal.SIGKILL)
        os.kill(victims[1].pid, signal.SIGKILL)
        self.assertEqual(wait_gone(victims), [], "the dead session's processes")
        self.assertTrue(os.path.isdir(dead_tmp), "the killed session's temp dir vanished by itself")

        # A live neighbour, with an empty session cgroup (its tool stopped).
        live = ProcessManager(BIN)
        self.addCleanup(live.shutdown)
        live.create("t", ["sleep", "300"]).stop(timeout=0)
        live_cg = os.path.join(parent, "procmgr-" + live.session)
        if cgroups:
            self.assertTrue(os.path.isdir(live_cg), "no session cgroup %s" % live_cg)
            # A sweep never touches a cgroup changed in the last seconds (it may
            # be a sidecar's that is not open yet): make both look settled.
            for d in (dead_cg, live_cg):
                try:
                    os.utime(d, (time.time() - 3600, time.time() - 3600))
                except FileNotFoundError:
                    # Only the dead one can go: another session's start (a
                    # neighbour suite's) swept it already, as it should.
                    self.assertEqual(d, dead_cg, "the live session's cgroup vanished")

        work = tempfile.mkdtemp(prefix="procmgr-sweeplog-")
        self.addCleanup(shutil.rmtree, work, True)
        log = os.path.join(work, "sidecar.log")
        nxt = ProcessManager(BIN, log_file=log, log_level="debug")
        self.addCleanup(nxt.shutdown)
        # The sweep runs in the background and logs when it is done.
        self.assertTrue(
            wait_until(lambda: "litter sweep done" in support.read_file(log)),
            "the next start's litter sweep never finished: %s" % support.read_file(log)[-2000:],
        )
        self.assertFalse(os.path.exists(dead_tmp), "the next start left the dead session's temp dir %s" % dead_tmp)
        if cgroups:
            self.assertFalse(os.path.exists(dead_cg), "the next start left the dead session's empty cgroup %s" % dead_cg)
            self.assertTrue(os.path.isdir(live_cg), "the sweep removed a live session's cgroup")
        self.assertTrue(os.path.isdir(live._sidecar.tmpdir), "the sweep removed a live session's temp dir")
        # The neighbour still works.
        q = live.create("t2", ["sleep", "300"])
        self.assertTrue(Proc(q.pid).running())
        q.stop(timeout=0)
        if not cgroups:
            self.skipTest("cgroup v2 is not writable here: only the temp dir part ran")


class WatchdogStopsGentlyTest(support.SidecarTestCase):
    """After a SIGKILL of the sidecar the watchdog sends SIGTERM first and
    SIGKILL only after a grace, so tools can clean up (issue 11, item 7)."""

    def test_a_daemonized_tool_traps_sigterm_and_cleans_up(self) -> None:
        work = tempfile.mkdtemp(prefix="procmgr-gentle-")
        self.addCleanup(shutil.rmtree, work, True)
        pidfile = os.path.join(work, "pid")
        cleaned = os.path.join(work, "cleaned")
        daemon = (
            "import os, signal, sys, time\n"
            "def bye(*_):\n"
            "    open(%r, 'w').write('cleaned up\\n')\n"
            "    sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, bye)\n"
            "open(%r + '.tmp', 'w').write('%%d\\n' %% os.getpid())\n"
            "os.rename(%r + '.tmp', %r)\n"
            "time.sleep(300)\n"
        ) % (cleaned, pidfile, pidfile, pidfile)
        pm = ProcessManager(BIN)
        self.addCleanup(pm.shutdown)
        watchdog = Proc(pm._sidecar.hello["watchdog_pid"])
        # Like dbus-daemon --fork: the tool's work is done by a daemonized grandchild.
        p = pm.create("t", ["sh", "-c", 'setsid "$0" -c "$1" & exec sleep 300', PYTHON, daemon])
        grandchild = Proc(read_pid(pidfile))
        os.kill(pm.pid, signal.SIGKILL)
        self.assertEqual(wait_gone([grandchild, Proc(p.pid), watchdog]), [], "survivors")
        self.assertTrue(os.path.exists(cleaned), "the watchdog SIGKILLed a tool that traps SIGTERM")

    def test_a_daemonized_tool_that_ignores_sigterm_is_still_killed(self) -> None:
        work = tempfile.mkdtemp(prefix="procmgr-stubborn-")
        self.addCleanup(shutil.rmtree, work, True)
        pidfile = os.path.join(work, "pid")
        pm = ProcessManager(BIN)
        self.addCleanup(pm.shutdown)
        # The daemon announces its pid once its trap is set: a SIGKILL of the
        # sidecar before that would test a daemon that SIGTERM ends.
        daemon = 'trap "" TERM; echo $$ > "$1"; exec sleep 300'
        p = pm.create("t", ["sh", "-c", 'setsid sh -c "$1" sh "$0" & exec sleep 301', pidfile, daemon])
        daemon_pid = read_pid(pidfile)
        self.assertTrue(support.ignores_signal(daemon_pid, signal.SIGTERM), "the daemon does not ignore SIGTERM")
        self.assertIn(daemon_pid, support.descendants(p.pid), "the announced daemon is not the tool's")
        tree = [Proc(daemon_pid), Proc(p.pid)]
        os.kill(pm.pid, signal.SIGKILL)
        self.assertEqual(wait_gone(tree), [], "a tool ignoring SIGTERM outlived the watchdog")


class _Spy:
    """Records every request the client sends (our own client: checking what goes on the wire)."""

    def __init__(self, pm: ProcessManager) -> None:
        self.calls = []
        sc = pm._connection()
        real = sc.call

        def call(method, params, timeout=None, **kw):
            self.calls.append((method, json.loads(json.dumps(params))))
            return real(method, params, timeout, **kw)

        sc.call = call  # type: ignore[assignment]

    def sent(self, method: str):
        return [p for m, p in self.calls if m == method]


class ZeroMeansZeroTest(support.ManagerTestCase):
    """Durations: absent = default, 0 = zero, NaN/inf/negative refused before
    sending (issue 11, item 8)."""

    def test_bad_durations_are_refused_before_anything_is_sent(self) -> None:
        p = self.pm.create(self.tag(), ["sleep", "300"], output=output_option.PIPE)
        tool = Proc(p.pid)
        spy = _Spy(self.pm)
        for bad in BAD_SECONDS:
            with self.subTest(value=bad):
                for what, call in (
                    ("Process.stop", lambda: p.stop(timeout=bad)),
                    ("Process.wait", lambda: p.wait(bad)),
                    ("ProcessManager.stop", lambda: self.pm.stop(p.tag, timeout=bad)),
                    ("read_output wait", lambda: p.read_output(wait=bad)),
                    ("wait_for_output", lambda: p.wait_for_output("x", timeout=bad)),
                    ("create stop_timeout", lambda: self.pm.create("n", ["true"], stop_timeout=bad)),
                    ("ready timeout", lambda: self.pm.create("n", ["true"], ready=Ready.path("x", timeout=bad))),
                    ("ready dict", lambda: self.pm.create("n", ["true"], ready={"path": "x", "timeout": bad})),
                    ("restart window", lambda: Restart("always", window=bad)),
                    ("restart backoff", lambda: Restart("always", initial_backoff=bad)),
                    ("restart max backoff", lambda: Restart("always", max_backoff=bad)),
                    ("manager stop_timeout", lambda: ProcessManager(BIN, stop_timeout=bad)),
                    ("shutdown", lambda: self.pm.shutdown(timeout=bad)),
                ):
                    with self.assertRaises(ValueError, msg=what):
                        call()
        self.assertEqual(spy.calls, [], "requests went out with a bad duration")
        self.assertTrue(tool.running(), "a refused stop stopped the tool")

    def test_nan_is_refused_at_the_wire_too(self) -> None:
        p = self.pm.create(self.tag(), ["sleep", "300"])
        sc = self.pm._connection()
        with self.assertRaises(ValueError):
            sc.call("stop", {"tag": p.tag, "timeout": float("nan")})
        self.assertEqual(sc._pending, {}, "a refused request stayed pending")
        self.assertTrue(Proc(p.pid).running())
        self.assertTrue(self.pm.running(p.tag), "the connection broke")

    def test_zero_is_sent_as_zero_and_absent_is_left_out(self) -> None:
        p = self.pm.create(self.tag(), ["sleep", "300"], output=output_option.PIPE, stop_timeout=0)
        spy = _Spy(self.pm)
        p.read_output(wait=0)
        p.read_output()
        with self.assertRaises(subprocess.TimeoutExpired):
            p.wait(0)
        p.stop(timeout=0)
        reads = spy.sent("read_output")
        self.assertEqual(reads[0].get("wait"), 0, "wait=0 was not sent as 0: %r" % reads)
        self.assertNotIn("wait", reads[1])
        self.assertEqual(spy.sent("wait")[0]["timeout"], 0)
        self.assertEqual(spy.sent("stop")[0]["timeout"], 0)
        q = self.pm.create(self.tag("2"), ["sleep", "300"], ready=Ready.path("/", timeout=0),
                           restart=Restart("on-failure", window=0, initial_backoff=0, max_backoff=0))
        create = spy.sent("create")[0]
        self.assertEqual(create["ready"]["timeout"], 0)
        self.assertEqual(create["restart"]["window"], 0)
        self.assertEqual(create["restart"]["backoff"], {"initial": 0, "max": 0})
        q.stop()
        self.assertNotIn("timeout", spy.sent("stop")[1])


    def test_a_zero_timeout_looks_once(self) -> None:
        p = self.pm.create(self.tag(), ["sh", "-c", "echo ready; exec sleep 300"], output=output_option.PIPE)
        p.wait_for_output("ready", timeout=DEADLINE)
        self.assertEqual(p.wait_for_output("ready", timeout=0, offset=0).group(0), "ready")
        with self.assertRaises(ProcMgrTimeoutError):
            p.wait_for_output("never", timeout=0)
        stream = p.stdout
        stream.timeout = 0
        self.assertEqual(stream.readline(), "ready\n")
        with self.assertRaises(ProcMgrTimeoutError):
            stream.readline()
        for bad in BAD_SECONDS:
            with self.assertRaises(ValueError):
                stream.timeout = bad
        p.stop(timeout=0)


class ArgumentMistakesTest(support.ManagerTestCase):
    """Argument mistakes are named (issue 11, item 9)."""

    def test_a_non_str_argv_item_is_named(self) -> None:
        with self.assertRaises(TypeError) as cm:
            self.pm.create(self.tag(), ["sleep", 60])
        self.assertIn("argv[1]", str(cm.exception))
        self.assertIn("int", str(cm.exception))
        self.assertFalse(self.pm.running(self.tag()))

    def test_an_output_str_naming_an_output_option_is_refused(self) -> None:
        work = tempfile.mkdtemp(prefix="procmgr-outname-")
        self.addCleanup(shutil.rmtree, work, True)
        for name, option in (("PIPE", "PIPE"), ("pipe", "PIPE"), ("Pipe", "PIPE"),
                             ("STDOUT", "STDOUT"), ("discard", "DISCARD")):
            with self.subTest(output=name):
                with self.assertRaises(ValueError) as cm:
                    self.pm.create(self.tag(), ["true"], output=name, cwd=work)
                self.assertIn("output_option.%s" % option, str(cm.exception))
        self.assertEqual(os.listdir(work), [], "a refused output made a file")
        # A path that merely ends in PIPE is a file.
        p = self.pm.create(self.tag(), ["echo", "hi"], output="./PIPE", cwd=work)
        p.wait(DEADLINE)
        p.stop()
        with open(os.path.join(work, "PIPE")) as f:
            self.assertEqual(f.read(), "hi\n")

    def test_a_single_str_with_spaces_gets_a_hint(self) -> None:
        with self.assertRaises(SpawnError) as cm:
            self.pm.create(self.tag(), "sleep 60")
        self.assertIn("pass a list, e.g. ['sleep', '60']", str(cm.exception))
        self.assertFalse(self.pm.running(self.tag()))

    def test_manager_stop_by_tag(self) -> None:
        p = self.pm.create(self.tag(), support.TREE)
        tree = [Proc(pid) for pid in support.tree_members(p.pid)] + [Proc(p.pid)]
        rc = self.pm.stop(self.tag())
        self.assertEqual(rc, -signal.SIGTERM)
        self.assertEqual(wait_gone(tree, timeout=1), [], "stop(tag) returned with the tree alive")
        self.assertFalse(self.pm.running(self.tag()))
        with self.assertRaises(NoSuchTagError):
            p.wait(0)
        with self.assertRaises(NoSuchTagError):
            self.pm.stop(self.tag())

    def test_relative_capture_and_output_files_resolve_against_the_tools_cwd(self) -> None:
        work = tempfile.mkdtemp(prefix="procmgr-relcwd-")
        here = tempfile.mkdtemp(prefix="procmgr-relhost-")
        self.addCleanup(shutil.rmtree, work, True)
        self.addCleanup(shutil.rmtree, here, True)
        old = os.getcwd()
        os.chdir(here)
        self.addCleanup(os.chdir, old)
        p = self.pm.create(self.tag(), ["echo", "captured"], output=output_option.PIPE,
                           capture_file="cap.log", cwd=work)
        q = self.pm.create(self.tag("2"), ["echo", "to a file"], output="out.log", cwd=work)
        p.wait(DEADLINE)
        q.wait(DEADLINE)
        p.stop()
        q.stop()
        self.assertEqual(sorted(os.listdir(here)), [], "a relative path resolved against the host's cwd")
        self.assertTrue(wait_until(lambda: support.read_file(os.path.join(work, "cap.log")) == "captured\n"))
        self.assertEqual(support.read_file(os.path.join(work, "out.log")), "to a file\n")


def _listing(path: str) -> str:
    try:
        return repr(os.listdir(path))
    except OSError as exc:
        return str(exc)
