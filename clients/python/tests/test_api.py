"""Every method and exception of ProcessManager and Process, checked against the OS."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import unittest

from . import support
from .support import Proc, ManagerTestCase

from procmgr import (
    NoSuchTagError,
    Process,
    ProcessInfo,
    ProcessManager,
    ProcMgrError,
    SidecarError,
    SpawnError,
    TagInUseError,
    output_option,
)


def tearDownModule() -> None:
    support.assert_no_leftovers(__name__)


class CreateTest(ManagerTestCase):
    def test_create_starts_a_group_leader_in_the_sidecar_tree(self):
        p = self.pm.create(self.tag(), ["sleep", "300"])
        self.assertIsInstance(p, Process)
        self.assertEqual(p.tag, self.tag())
        self.assertEqual(p.argv, ["sleep", "300"])
        st = support.stat(p.pid)
        self.assertIsNotNone(st, "no /proc entry for the tool")
        self.assertEqual(st["comm"], "sleep")
        self.assertEqual(st["pgrp"], p.pid, "the tool must lead its own process group")
        self.assertEqual(st["ppid"], self.pm.pid, "the sidecar is the tool's parent")
        # create answers once exec has begun (the spawn's close-on-exec pipe
        # closed); the kernel sets up the new argv a moment later.
        self.assertTrue(support.wait_until(lambda: support.cmdline(p.pid) == ["sleep", "300"]),
                        "the tool's /proc cmdline is %r" % support.cmdline(p.pid))
        self.assertTrue(p.is_alive())
        self.assertIsNone(p.returncode)

    def test_tool_does_not_share_the_hosts_session_or_group(self):
        p = self.pm.create(self.tag(), ["sleep", "300"])
        st = support.stat(p.pid)
        self.assertNotEqual(st["session"], os.getsid(0), "Ctrl-C in the host's terminal would reach it")
        self.assertNotEqual(st["pgrp"], os.getpgrp())

    def test_argv_as_str_is_a_single_executable_without_shell(self):
        with tempfile.TemporaryDirectory() as d:
            marker = os.path.join(d, "ran")
            script = os.path.join(d, "tool with space; echo")
            with open(script, "w") as f:
                f.write("#!/bin/sh\necho \"$#\" > %s\nexec sleep 300\n" % marker)
            os.chmod(script, 0o755)
            p = self.pm.create(self.tag(), script)
            self.assertEqual(p.argv, [script])
            self.assertTrue(support.wait_until(lambda: support.read_file(marker)))
            self.assertEqual(support.read_file(marker).strip(), "0", "a str argv must be run with no arguments")
            self.assertTrue(support.running(p.pid))

    def test_tool_environment_is_the_hosts_current_environ_plus_extras(self):
        os.environ["PROCMGR_TEST_LATE_VAR"] = "set-after-sidecar-start"
        os.environ["PROCMGR_TEST_DROP_ME"] = "x"
        try:
            p = self.pm.create(
                self.tag(), ["sleep", "300"],
                env={"EXTRA_ONE": "1", "PROCMGR_TEST_DROP_ME": None},
            )
        finally:
            del os.environ["PROCMGR_TEST_LATE_VAR"]
            del os.environ["PROCMGR_TEST_DROP_ME"]
        env = support.environ(p.pid)
        self.assertEqual(env.get("PROCMGR_TEST_LATE_VAR"), "set-after-sidecar-start")
        self.assertEqual(env.get("EXTRA_ONE"), "1")
        self.assertNotIn("PROCMGR_TEST_DROP_ME", env)
        self.assertEqual(env.get("PATH"), os.environ.get("PATH"))
        self.assertEqual(env.get("PROCMGR_TAG"), self.tag())
        self.assertTrue(env.get("PROCMGR_SESSION"))

    def test_large_requests_and_non_ascii_text(self):
        # 300 kB: several pipe buffers, so the request goes out in pieces
        # (one variable may hold at most 128 kB: execve's limit)
        bigs = {"BIG%d" % i: chr(ord("a") + i) * 100000 for i in range(3)}
        tag = "t\u00fcl \u2713 " + self.tag()
        p = self.pm.create(tag, ["sleep", "300"], env=dict(bigs, GREETING="gr\u00fc\u00df \u2603"))
        env = support.environ(p.pid)
        for k, v in bigs.items():
            self.assertEqual(env.get(k), v)
        self.assertEqual(env.get("GREETING"), "gr\u00fc\u00df \u2603")
        self.assertEqual(env.get("PROCMGR_TAG"), tag)
        self.assertIs(self.pm.fetch(tag), p)
        self.assertEqual([q.tag for q in self.pm.list()], [tag])

    def test_cwd_defaults_to_the_hosts_current_directory(self):
        with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
            old = os.getcwd()
            os.chdir(d1)
            try:
                p1 = self.pm.create(self.tag("1"), ["sleep", "300"])
            finally:
                os.chdir(old)
            p2 = self.pm.create(self.tag("2"), ["sleep", "300"], cwd=d2)
            self.assertEqual(os.readlink("/proc/%d/cwd" % p1.pid), os.path.realpath(d1))
            self.assertEqual(os.readlink("/proc/%d/cwd" % p2.pid), os.path.realpath(d2))

    def test_tool_gets_only_fds_0_1_2(self):
        p = self.pm.create(self.tag(), ["sleep", "300"])

        def fds():
            return sorted(int(x) for x in os.listdir("/proc/%d/fd" % p.pid))

        # the dynamic loader of `sleep` briefly holds libc open: a leaked fd would stay
        support.wait_until(lambda: fds() == [0, 1, 2])

        def targets():
            out = []
            for fd in fds():
                try:
                    out.append("%d -> %s" % (fd, os.readlink("/proc/%d/fd/%d" % (p.pid, fd))))
                except OSError as exc:
                    out.append("%d: %s" % (fd, exc))
            return out

        self.assertEqual(fds(), [0, 1, 2], "the tool (%s) holds %s" % (support.stat(p.pid), targets()))
        self.assertEqual(os.readlink("/proc/%d/fd/1" % p.pid), "/dev/null")

    def test_an_adopted_orphan_is_counted_with_its_tool_and_goes_with_its_stop(self):
        with tempfile.TemporaryDirectory() as d:
            pidfile = os.path.join(d, "orphan")
            p = self.pm.create(self.tag(), ["sh", "-c", "(sleep 300 & echo $! > %s); exec sleep 300" % pidfile])
            self.assertTrue(support.wait_until(lambda: os.path.exists(pidfile) and support.read_file(pidfile).strip()),
                            "waited for the orphan's pid file")
            orphan = int(support.read_file(pidfile))
        sidecar = self.pm._connection().pid
        self.assertTrue(support.wait_until(lambda: (support.stat(orphan) or {}).get("ppid") == sidecar),
                        "waited for the orphan to be re-parented to the sidecar (its subreaper)")
        self.assertTrue(support.wait_until(lambda: p.info().orphans == 1),
                        "waited for the sidecar to count the orphan with its tool: %r" % (p.info(),))
        p.stop()
        self.assertFalse(support.running(orphan), "the tool's adopted orphan outlived its stop")

    def test_output_to_file(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "out.log")
            p = self.pm.create(self.tag(), ["sh", "-c", "echo to-out; echo to-err >&2"], path)
            self.assertEqual(p.wait(support.DEADLINE), 0)
            with open(path) as f:
                self.assertEqual(sorted(f.read().split()), ["to-err", "to-out"])

    def test_pipe_output_is_refused_clearly_without_capture(self):
        # An older sidecar: hello without the supervisor-grade features.
        from procmgr import Ready, Restart

        sc = self.pm._connection()
        sc.features = sc.features - {"capture", "readiness", "restart", "stdin"}
        with self.assertRaises(ProcMgrError) as cm:
            self.pm.create(self.tag(), ["sleep", "300"], output_option.PIPE)
        self.assertIn("capture", str(cm.exception))
        for feature, kwargs in [
            ("stdin", {"stdin": output_option.PIPE}),
            ("readiness", {"ready": Ready.path("/nonexistent")}),
            ("restart", {"restart": Restart("always")}),
        ]:
            with self.subTest(feature):
                with self.assertRaises(ProcMgrError) as cm:
                    self.pm.create(self.tag(), ["sleep", "300"], **kwargs)
                self.assertIn(repr(feature), str(cm.exception))
        self.assertFalse(self.pm.running(self.tag()), "a refused create must not start anything")

    def test_tag_in_use(self):
        p = self.pm.create(self.tag(), ["sleep", "300"])
        with self.assertRaises(TagInUseError) as cm:
            self.pm.create(self.tag(), ["sleep", "301"])
        self.assertEqual(cm.exception.code, -32001)
        self.assertEqual(cm.exception.tag, self.tag())
        self.assertIsInstance(cm.exception, ProcMgrError)
        self.assertTrue(support.running(p.pid), "the first tool must be untouched")
        self.assertEqual([q.pid for q in self.pm.list()], [p.pid])

    def test_spawn_errors_carry_the_os_reason_and_leave_the_tag_free(self):
        with tempfile.TemporaryDirectory() as d:
            not_exec = os.path.join(d, "not-executable")
            with open(not_exec, "w") as f:
                f.write("#!/bin/sh\n")
            cases = [
                ("missing", ["/nonexistent/procmgr-test-tool"], {}, "no such file"),
                ("path", ["procmgr-test-no-such-tool-anywhere"], {}, ""),
                ("noexec", [not_exec], {}, "permission denied"),
                ("badcwd", ["sleep", "1"], {"cwd": os.path.join(d, "nope")}, "no such file"),
            ]
            for name, argv, kw, reason in cases:
                with self.subTest(name):
                    with self.assertRaises(SpawnError) as cm:
                        self.pm.create(self.tag(name), argv, **kw)
                    self.assertEqual(cm.exception.code, -32003)
                    self.assertIn(reason, str(cm.exception).lower())
                    self.assertFalse(self.pm.running(self.tag(name)))
                    self.assertIsNone(self.pm.fetch(self.tag(name)))
            # and the tag can be used afterwards
            p = self.pm.create(self.tag("missing"), ["sleep", "300"])
            self.assertTrue(support.running(p.pid))

    def test_bad_arguments_are_refused_before_anything_starts(self):
        with self.assertRaises(ValueError):
            self.pm.create(self.tag(), [])
        with self.assertRaises(ValueError):
            self.pm.create("", ["sleep", "1"])
        with self.assertRaises(TypeError):
            self.pm.create(self.tag(), ["sleep", "1"], env={"A": 1})
        with self.assertRaises(TypeError):
            self.pm.create(self.tag(), ["sleep", "1"], output=42)
        self.assertEqual(self.pm.list(), [])

    def test_invalid_tag_is_a_procmgr_error(self):
        with self.assertRaises(ProcMgrError):
            self.pm.create("x" * 129, ["sleep", "1"])
        with self.assertRaises(ProcMgrError):
            self.pm.create("bad\ntag", ["sleep", "1"])


class LookupTest(ManagerTestCase):
    def test_running_fetch_list_getitem_contains(self):
        a = self.pm.create(self.tag("b"), ["sleep", "300"])
        b = self.pm.create(self.tag("a"), ["sleep", "300"])
        self.assertTrue(self.pm.running(self.tag("a")))
        self.assertFalse(self.pm.running("no-such-tag"))
        self.assertIs(self.pm.fetch(self.tag("a")), b, "fetch returns the same Process object")
        self.assertIsNone(self.pm.fetch("no-such-tag"))
        self.assertIs(self.pm[self.tag("b")], a)
        self.assertIsNone(self.pm["no-such-tag"])
        self.assertIn(self.tag("a"), self.pm)
        self.assertNotIn("no-such-tag", self.pm)
        self.assertEqual([p.tag for p in self.pm.list()], [self.tag("a"), self.tag("b")])
        self.assertEqual({p.pid for p in self.pm.list()}, {a.pid, b.pid})

    def test_info_snapshot(self):
        p = self.pm.create(self.tag(), ["sleep", "300"])
        info = p.info()
        self.assertIsInstance(info, ProcessInfo)
        self.assertEqual((info.tag, info.pid, info.pgid), (self.tag(), p.pid, p.pid))
        self.assertEqual(info.argv, ("sleep", "300"))
        self.assertEqual(info.state, "running")
        self.assertTrue(info.alive)
        self.assertIsNone(info.returncode)
        self.assertIsNotNone(info.started_at)
        self.assertIsNone(info.exited_at)
        os.kill(p.pid, signal.SIGKILL)
        self.assertTrue(support.wait_until(lambda: not p.info().alive))
        info = p.info()
        self.assertEqual(info.state, "exited")
        self.assertEqual(info.signal, "SIGKILL")
        self.assertEqual(info.returncode, -9)
        self.assertIsNotNone(info.exited_at)

    def test_unknown_tag_errors(self):
        self.assertIsNone(self.pm.fetch("nope"))
        # the raw protocol's -32002 surfaces as NoSuchTagError
        with self.assertRaises(NoSuchTagError) as cm:
            self.pm._session.call("stop", {"tag": "nope"})
        self.assertEqual(cm.exception.code, -32002)
        self.assertEqual(cm.exception.tag, "nope")

    def test_repr_does_not_fail(self):
        p = self.pm.create(self.tag(), ["sleep", "300"])
        self.assertIn(self.tag(), repr(p))
        self.assertIn(str(self.pm.pid), repr(self.pm))
        self.assertTrue(str(self.pm))


class LifecycleTest(ManagerTestCase):
    def test_crash_keeps_the_tag_running_until_stop(self):
        p = self.pm.create(self.tag(), ["sleep", "300"])
        os.kill(p.pid, signal.SIGKILL)
        self.assertTrue(support.wait_until(lambda: not p.is_alive()))
        self.assertFalse(support.running(p.pid))
        self.assertTrue(self.pm.running(self.tag()), "CASA semantics: running() stays True after a crash")
        self.assertEqual(p.returncode, -9)
        self.assertEqual(p.stop(), -9)
        self.assertFalse(self.pm.running(self.tag()))

    def test_exit_status(self):
        p = self.pm.create(self.tag(), ["sh", "-c", "exit 3"])
        self.assertEqual(p.wait(support.DEADLINE), 3)
        self.assertEqual(p.returncode, 3)
        self.assertFalse(p.is_alive())

    def test_stop_terminates_and_releases(self):
        p = self.pm.create(self.tag(), ["sleep", "300"])
        tool = Proc(p.pid)
        rc = p.stop()
        self.assertEqual(rc, -signal.SIGTERM)
        self.assertFalse(tool.running(), "stop returned while the tool still runs")
        with self.assertRaises(ProcessLookupError):
            os.kill(p.pid, 0)
        self.assertFalse(self.pm.running(self.tag()))
        self.assertIsNone(self.pm.fetch(self.tag()))
        self.assertEqual(p.returncode, -signal.SIGTERM)

    def test_stop_kills_the_whole_tree(self):
        p = self.pm.create(self.tag(), support.TREE)
        members = [Proc(x) for x in [p.pid] + support.tree_members(p.pid)]
        self.assertEqual(len(members), 3)
        p.stop()
        self.assertEqual([m for m in members if m.running()], [], "stop left part of the group")

    def test_stop_escalates_to_sigkill(self):
        p = self.pm.create(self.tag(), support.IGNORE_TERM)
        tool = Proc(p.pid)
        self.assertTrue(support.wait_until(lambda: support.stat(p.pid)["comm"] == "sleep"))
        self.assertEqual(p.stop(timeout=0.3), -signal.SIGKILL)
        self.assertTrue(tool.gone(), tool)  # stop answers once it has reaped the tool

    def test_per_tool_stop_timeout(self):
        p = self.pm.create(self.tag(), support.IGNORE_TERM, stop_timeout=0.2)
        tool = Proc(p.pid)
        self.assertTrue(support.wait_until(lambda: support.stat(p.pid)["comm"] == "sleep"))
        self.assertEqual(p.stop(), -signal.SIGKILL)
        self.assertTrue(tool.gone(), tool)  # stop answers once it has reaped the tool

    def test_stop_of_an_exited_tool_releases_the_tag(self):
        p = self.pm.create(self.tag(), ["true"])
        self.assertEqual(p.wait(support.DEADLINE), 0)
        self.assertTrue(self.pm.running(self.tag()))
        self.assertEqual(p.stop(), 0)
        self.assertFalse(self.pm.running(self.tag()))

    def test_methods_of_a_released_process_raise_no_such_tag(self):
        p = self.pm.create(self.tag(), ["sleep", "300"])
        p.stop()
        for name, call in [
            ("is_alive", p.is_alive),
            ("info", p.info),
            ("stop", p.stop),
            ("wait", lambda: p.wait(1)),
            ("send_signal", lambda: p.send_signal(signal.SIGTERM)),
        ]:
            with self.subTest(name):
                with self.assertRaises(NoSuchTagError):
                    call()
        self.assertEqual(p.returncode, -signal.SIGTERM, "returncode keeps the last known status")

    def test_an_old_process_never_acts_on_the_tags_new_tool(self):
        old = self.pm.create(self.tag(), ["sleep", "300"])
        old.stop()
        new = self.pm.create(self.tag(), ["sleep", "300"])
        with self.assertRaises(NoSuchTagError):
            old.stop()
        with self.assertRaises(NoSuchTagError):
            old.send_signal(signal.SIGKILL)
        self.assertTrue(support.running(new.pid))
        self.assertTrue(new.is_alive())

    def test_wait_times_out_like_popen(self):
        p = self.pm.create(self.tag(), ["sleep", "300"])
        with self.assertRaises(subprocess.TimeoutExpired):
            p.wait(timeout=0.2)
        self.assertTrue(support.running(p.pid))
        self.assertTrue(self.pm.running(self.tag()))

    def test_wait_without_timeout_returns_when_the_tool_exits(self):
        p = self.pm.create(self.tag(), ["sleep", "300"])
        threading.Timer(0.3, os.kill, (p.pid, signal.SIGKILL)).start()
        self.assertEqual(p.wait(), -signal.SIGKILL)
        self.assertFalse(support.running(p.pid))

    def test_send_signal_terminate_kill(self):
        p = self.pm.create(self.tag(), ["sleep", "300"])
        p.send_signal(signal.SIGSTOP)
        self.assertTrue(support.wait_until(lambda: support.stat(p.pid)["state"] == "T"))
        p.send_signal("SIGCONT")
        self.assertTrue(support.wait_until(lambda: support.stat(p.pid)["state"] != "T"))
        p.terminate()
        self.assertEqual(p.wait(support.DEADLINE), -signal.SIGTERM)
        q = self.pm.create(self.tag("k"), support.IGNORE_TERM)
        q.kill()
        self.assertEqual(q.wait(support.DEADLINE), -signal.SIGKILL)
        self.assertFalse(support.running(q.pid))
        with self.assertRaises(ValueError):
            q.send_signal("SIGNOTHING")

    def test_signal_reaches_the_whole_group(self):
        p = self.pm.create(self.tag(), support.TREE)
        members = [Proc(x) for x in support.tree_members(p.pid)]
        p.send_signal(signal.SIGKILL)
        self.assertEqual(support.wait_gone(members), [])


class ExitCallbackTest(ManagerTestCase):
    def test_on_exit_gets_every_exit_even_before_create_returns(self):
        seen = []
        done = threading.Event()

        def cb(proc):
            seen.append((proc.tag, proc.pid, proc.returncode, threading.current_thread().name))
            if len(seen) == 3:
                done.set()

        self.assertIs(self.pm.on_exit(cb), cb)
        quick = self.pm.create(self.tag("quick"), ["true"])  # may exit before create's reply
        crashed = self.pm.create(self.tag("crash"), ["sleep", "300"])
        os.kill(crashed.pid, signal.SIGKILL)
        stopped = self.pm.create(self.tag("stop"), ["sleep", "300"])
        stopped.stop()
        self.assertTrue(done.wait(support.DEADLINE), "callbacks seen: %r" % seen)
        got = {(t, pid, rc) for t, pid, rc, _ in seen}
        self.assertEqual(
            got,
            {
                (self.tag("quick"), quick.pid, 0),
                (self.tag("crash"), crashed.pid, -9),
                (self.tag("stop"), stopped.pid, -15),
            },
        )
        main = threading.current_thread().name
        self.assertTrue(all(name != main for *_, name in seen), "callbacks must not run on the caller")

    def test_a_failing_callback_is_logged_and_others_still_run(self):
        ok = threading.Event()

        def bad(proc):
            raise RuntimeError("callback boom")

        self.pm.on_exit(bad)
        self.pm.on_exit(lambda proc: ok.set())
        with self.assertLogs("procmgr", level="ERROR") as logs:
            self.pm.create(self.tag(), ["true"])
            self.assertTrue(ok.wait(support.DEADLINE))
        self.assertTrue(any("callback boom" in line for line in logs.output), logs.output)
        # the manager still works
        self.assertTrue(self.pm.running(self.tag()))

    def test_a_callback_may_call_the_manager_to_restart_a_tool(self):
        restarted = threading.Event()
        new_pids = []

        @self.pm.on_exit
        def restart(proc):
            if proc.tag == self.tag() and not new_pids:
                proc.stop()  # release the tag ...
                new_pids.append(self.pm.create(self.tag(), ["sleep", "300"]).pid)  # ... and restart
                restarted.set()

        old = self.pm.create(self.tag(), ["sleep", "300"])
        os.kill(old.pid, signal.SIGKILL)
        self.assertTrue(restarted.wait(support.DEADLINE))
        self.assertNotEqual(new_pids[0], old.pid)
        self.assertTrue(support.running(new_pids[0]))
        self.assertEqual(self.pm.fetch(self.tag()).pid, new_pids[0])

    def test_remove_on_exit(self):
        calls = []
        ok = threading.Event()
        cb = self.pm.on_exit(calls.append)
        self.pm.remove_on_exit(cb)
        self.pm.on_exit(lambda proc: ok.set())
        self.pm.create(self.tag(), ["true"])
        self.assertTrue(ok.wait(support.DEADLINE))
        self.assertEqual(calls, [])


class ManagerLifecycleTest(support.SidecarTestCase):
    def test_context_manager_stops_tools_and_sidecar(self):
        with ProcessManager(support.BIN) as pm:
            sidecar = Proc(pm.pid)
            tools = [Proc(pm.create("t%d" % i, ["sleep", "300"]).pid) for i in range(3)]
            tree = pm.create("tree", support.TREE)
            tools += [Proc(tree.pid)] + [Proc(x) for x in support.tree_members(tree.pid)]
            self.assertTrue(all(t.running() for t in tools))
        self.assertEqual([t for t in tools if t.running()], [], "tools survived shutdown")
        self.assertEqual(support.wait_gone([sidecar]), [], "the sidecar survived shutdown")
        with self.assertRaises(ProcMgrError):
            pm.running("t0")
        with self.assertRaises(ProcMgrError):
            pm.create("again", ["sleep", "1"])
        self.assertEqual(pm.shutdown(), 0, "shutdown is idempotent")

    def test_a_variable_the_host_dropped_after_spawn_is_not_inherited(self):
        # The client sends only the difference from the sidecar's own
        # environment (inherited at spawn): a removal must be sent too.
        os.environ["PROCMGR_TEST_GONE_LATER"] = "at-spawn"
        try:
            pm = ProcessManager(support.BIN)
        finally:
            del os.environ["PROCMGR_TEST_GONE_LATER"]
        try:
            self.assertEqual(support.environ(pm.pid).get("PROCMGR_TEST_GONE_LATER"), "at-spawn")
            p = pm.create("t", ["sleep", "300"])
            env = support.environ(p.pid)
            self.assertNotIn("PROCMGR_TEST_GONE_LATER", env)
            self.assertEqual(env.get("PATH"), os.environ.get("PATH"))
        finally:
            pm.shutdown()

    def test_shutdown_counts_and_releases(self):
        pm = ProcessManager(support.BIN)
        procs = [pm.create("t%d" % i, ["sleep", "300"]) for i in range(2)]
        self.assertEqual(pm.shutdown(), 2)
        for p in procs:
            self.assertFalse(support.running(p.pid))
            with self.assertRaises(NoSuchTagError):
                p.is_alive()

    def test_sidecar_runs_in_its_own_session_with_parent_pid(self):
        with ProcessManager(support.BIN, log_level="debug") as pm:
            st = support.stat(pm.pid)
            self.assertEqual(st["session"], pm.pid, "the sidecar must lead its own session")
            self.assertEqual(st["ppid"], os.getpid())
            argv = support.cmdline(pm.pid)
            self.assertIn("--parent-pid", argv)
            self.assertEqual(argv[argv.index("--parent-pid") + 1], str(os.getpid()))
            self.assertTrue(os.path.exists(pm.log_path), pm.log_path)
            fds = os.listdir("/proc/%d/fd" % pm.pid)
            self.assertTrue(fds)

    def test_manager_stop_timeout_is_the_default_for_tools(self):
        with ProcessManager(support.BIN, stop_timeout=0.2) as pm:
            argv = support.cmdline(pm.pid)
            self.assertIn("--stop-timeout", argv)
            p = pm.create("stubborn", support.IGNORE_TERM)
            self.assertTrue(support.wait_until(lambda: support.stat(p.pid)["comm"] == "sleep"))
            self.assertEqual(p.stop(), -signal.SIGKILL)
            self.assertFalse(support.running(p.pid))

    def test_binary_lookup(self):
        saved = os.environ.get("PROCMGR_BIN")
        saved_path = os.environ.get("PATH", "")
        try:
            os.environ["PROCMGR_BIN"] = "/nonexistent/procmgr"
            with self.assertRaises(ProcMgrError) as cm:
                ProcessManager()
            self.assertIn("go build", str(cm.exception))
            self.assertIn("/nonexistent/procmgr", str(cm.exception))
            with self.assertRaises(ProcMgrError):
                ProcessManager("/nonexistent/procmgr")
            # the argument wins over the variable
            with ProcessManager(support.BIN) as pm:
                self.assertTrue(support.running(pm.pid))
            os.environ["PROCMGR_BIN"] = support.BIN
            with ProcessManager() as pm:
                self.assertEqual(support.cmdline(pm.pid)[0], support.BIN)
            # then PATH
            del os.environ["PROCMGR_BIN"]
            os.environ["PATH"] = os.path.dirname(support.BIN) + os.pathsep + saved_path
            with ProcessManager() as pm:
                self.assertTrue(support.running(pm.pid))
            os.environ["PATH"] = "/nonexistent"
            with self.assertRaises(ProcMgrError) as cm:
                ProcessManager()
            self.assertIn("PROCMGR_BIN", str(cm.exception))
        finally:
            os.environ["PATH"] = saved_path
            if saved is None:
                os.environ.pop("PROCMGR_BIN", None)
            else:
                os.environ["PROCMGR_BIN"] = saved

    def test_a_binary_that_is_not_a_sidecar_gives_sidecar_error(self):
        with tempfile.TemporaryDirectory() as d:
            fake = os.path.join(d, "procmgr")
            with open(fake, "w") as f:
                f.write("#!/bin/sh\necho 'this is not procmgr' >&2\nexit 7\n")
            os.chmod(fake, 0o755)
            with self.assertLogs("procmgr", "ERROR"), self.assertRaises(SidecarError) as cm:
                ProcessManager(fake)
            msg = str(cm.exception)
            self.assertIn("not procmgr", msg, "the sidecar's stderr should be quoted")
            self.assertIn("status 7", msg)
            log = msg.rsplit("log: ", 1)[1]
            self.assertTrue(log.startswith(tempfile.gettempdir()), msg)
            shutil.rmtree(os.path.dirname(log))

    def test_garbage_collected_manager_does_not_leak_its_sidecar(self):
        pm = ProcessManager(support.BIN)
        sidecar = Proc(pm.pid)
        tool = Proc(pm.create("t", ["sleep", "300"]).pid)
        del pm
        import gc

        gc.collect()
        self.assertEqual(support.wait_gone([tool, sidecar]), [])


if __name__ == "__main__":
    unittest.main()
