"""The hard cases: threads, a dying sidecar, a dying host, fork, and output routing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import textwrap
import threading
import time
import unittest

from . import support
from .support import ManagerTestCase, Proc

from procmgr import ProcMgrError, SidecarError


def tearDownModule() -> None:
    support.assert_no_leftovers(__name__)


class ThreadsTest(ManagerTestCase):
    def test_threads_hammering_one_manager(self):
        errors = []
        created = {}  # tag -> Proc
        stopped = set()
        lock = threading.Lock()
        n_threads, n_rounds = 8, 12

        def worker(w):
            try:
                for r in range(n_rounds):
                    tag = "w%d-r%d" % (w, r)
                    p = self.pm.create(tag, ["sleep", "300"])
                    with lock:
                        created[tag] = Proc(p.pid)
                    assert self.pm.running(tag)
                    assert self.pm.fetch(tag) is p
                    assert p.is_alive()
                    assert p.info().pid == p.pid
                    assert any(q.tag == tag for q in self.pm.list())
                    try:
                        self.pm.create(tag, ["sleep", "1"])
                        raise AssertionError("duplicate tag accepted")
                    except ProcMgrError as e:
                        assert e.code == -32001, e
                    if r % 2:
                        assert p.stop() == -signal.SIGTERM
                        with lock:
                            stopped.add(tag)
                        assert not self.pm.running(tag)
            except BaseException as e:  # reported below
                errors.append((w, repr(e)))

        # A slow stop in the background must not get in the way of the others.
        slow = self.pm.create("slow", support.IGNORE_TERM, stop_timeout=1)
        slow_proc = Proc(slow.pid)
        slow_thread = threading.Thread(target=slow.stop)
        threads = [threading.Thread(target=worker, args=(w,)) for w in range(n_threads)]
        slow_thread.start()
        for t in threads:
            t.start()
        for t in threads + [slow_thread]:
            t.join(support.DEADLINE * 3)
            self.assertFalse(t.is_alive(), "a thread hung")
        self.assertEqual(errors, [])
        self.assertTrue(slow_proc.gone(), slow_proc)
        self.assertEqual(len(created), n_threads * n_rounds)
        for tag, proc in created.items():
            if tag in stopped:
                self.assertTrue(proc.gone(), (tag, proc))
            else:
                self.assertTrue(proc.running(), (tag, proc))
        self.assertEqual(
            sorted(p.tag for p in self.pm.list()), sorted(set(created) - stopped)
        )
        self.assertEqual(self.pm.shutdown(), len(created) - len(stopped))
        self.assertEqual([p for p in created.values() if p.running()], [])


class SidecarDeathTest(ManagerTestCase):
    def test_sidecar_killed_under_a_pending_stop(self):
        p = self.pm.create(self.tag(), support.IGNORE_TERM, stop_timeout=120)
        tool = Proc(p.pid)
        self.assertTrue(support.wait_until(lambda: support.stat(p.pid)["comm"] == "sleep"))
        sidecar = Proc(self.pm.pid)
        outcome = {}

        def stop():
            try:
                outcome["result"] = p.stop()
            except BaseException as e:
                outcome["error"] = e

        t = threading.Thread(target=stop)
        t.start()
        # the stop is pending: the sidecar waits up to 120 s for the stubborn tool
        self.assertTrue(support.wait_until(lambda: self.pm._sidecar._pending))
        # ...and the sidecar is working on it (asked concurrently).
        self.assertTrue(
            support.wait_until(lambda: p.info().state == "stopping"),
            "waited for the sidecar to report the tool as stopping",
        )
        with self.assertLogs("procmgr", "ERROR") as logs:
            os.kill(sidecar.pid, signal.SIGKILL)
            t.join(support.DEADLINE)
        self.assertIn("SIGKILL", logs.output[0])
        self.assertFalse(t.is_alive(), "stop() hung after the sidecar died")
        err = outcome.get("error")
        self.assertIsInstance(err, SidecarError, outcome)
        self.assertIn("SIGKILL", str(err))
        self.assertIn(self.pm._sidecar.log_path, str(err))
        # later calls fail at once too
        for call in (lambda: self.pm.running("x"), p.is_alive, lambda: self.pm.create("y", ["true"])):
            with self.assertRaises(SidecarError):
                call()
        # the tool dies with its sidecar (parent-death signal), without any help from us
        self.assertEqual(support.wait_gone([sidecar, tool]), [])

    def test_sidecar_killed_under_a_pending_wait_without_timeout(self):
        p = self.pm.create(self.tag(), ["sleep", "300"])
        outcome = {}

        def wait():
            try:
                outcome["result"] = p.wait()
            except BaseException as e:
                outcome["error"] = e

        t = threading.Thread(target=wait)
        t.start()
        self.assertTrue(support.wait_until(lambda: self.pm._sidecar._pending))
        with self.assertLogs("procmgr", "ERROR"):
            os.kill(self.pm.pid, signal.SIGKILL)
            t.join(support.DEADLINE)
        self.assertFalse(t.is_alive(), "wait() hung after the sidecar died")
        self.assertIsInstance(outcome.get("error"), SidecarError, outcome)
        self.assertEqual(support.wait_gone([Proc(p.pid)]), [])

    def test_sidecar_exiting_on_sigterm_fails_calls_and_stops_tools(self):
        p = self.pm.create(self.tag(), support.TREE)
        members = [Proc(x) for x in [p.pid] + support.tree_members(p.pid)]
        with self.assertLogs("procmgr", "ERROR"):
            os.kill(self.pm.pid, signal.SIGTERM)  # graceful: it stops the tools, then exits
            self.assertEqual(support.wait_gone(members), [])
            self.assertTrue(support.wait_until(lambda: not self.pm._sidecar.alive))
        with self.assertRaises(SidecarError) as cm:
            self.pm.running(self.tag())
        self.assertIn("log:", str(cm.exception))

    def test_an_unanswered_call_times_out_instead_of_hanging(self):
        sc = self.pm._connection()
        os.kill(sc.pid, signal.SIGSTOP)
        try:
            # kill() returns before every thread has stopped: a thread still
            # running can answer the call (seen at load 5). Wait for the stop.
            self.assertTrue(support.wait_until(lambda: support.all_threads_stopped(sc.pid)),
                            "waited for every thread of the sidecar to be stopped (state T)")
            with self.assertRaises(SidecarError) as cm:
                sc.call("list", {}, timeout=0.3)
            self.assertIn("did not answer", str(cm.exception))
            self.assertIn(sc.log_path, str(cm.exception))
            with self.assertLogs("procmgr", "INFO") as logs:
                os.kill(sc.pid, signal.SIGCONT)
                # the late reply arrives, is logged and dropped
                support.wait_until(lambda: any("late reply" in l for l in logs.output))
            self.assertTrue(any("late reply" in l for l in logs.output), logs.output)
        finally:
            os.kill(sc.pid, signal.SIGCONT)
        # and the connection keeps working
        p = self.pm.create(self.tag(), ["sleep", "300"])
        self.assertTrue(p.is_alive())
        self.assertTrue(support.running(p.pid))


class InterruptTest(support.SidecarTestCase):
    def test_ctrl_c_during_a_call_leaves_the_manager_usable(self):
        res = support.run_host(r"""
            import json, logging, os, signal, threading, time
            logging.basicConfig(level=logging.WARNING)
            from procmgr import procmgr
            from procmgr import output_option
            # Ctrl-C raises KeyboardInterrupt, as in a terminal, even when this
            # host was started with SIGINT ignored (a background job of a
            # script, as in make stress-parallel).
            signal.signal(signal.SIGINT, signal.default_int_handler)
            # Ctrl-C while the stop call waits for its reply: the tool sends
            # it when the stop's SIGTERM reaches it, and ignores the SIGTERM
            # (its sleep too), so the reply comes only after the 3 s grace.
            # create returns once the traps are set (it prints "armed").
            script = ("trap '' TERM; sleep 300 & trap 'kill -INT %d' TERM; echo armed; "
                      "while kill -0 $! 2>/dev/null; do wait; done" % os.getpid())
            p = procmgr.create("stubborn", ["sh", "-c", script], output_option.PIPE, stop_timeout=3,
                               ready={"output": "^armed$", "timeout": 60})
            try:
                p.stop()
                outcome = "stop returned"
            except KeyboardInterrupt:
                outcome = "interrupted"
            # the sidecar goes on with the stop; the manager stays usable meanwhile
            q = procmgr.create("after", ["sleep", "300"])
            ok = procmgr.running("after") and q.is_alive()
            end = time.time() + 20
            while procmgr.running("stubborn") and time.time() < end:
                time.sleep(0.05)
            print(json.dumps({"outcome": outcome, "ok": ok, "stubborn": p.pid,
                              "released": not procmgr.running("stubborn")}))
        """)
        self.assertEqual(res.returncode, 0, res.stderr.decode())
        out = json.loads(res.stdout)
        self.assertEqual(out["outcome"], "interrupted")
        self.assertTrue(out["ok"])
        self.assertTrue(out["released"])
        self.assertFalse(support.running(out["stubborn"]))
        self.assertEqual(res.stderr.decode(), "", "no warnings about the abandoned reply")


class HostDeathTest(support.SidecarTestCase):
    HOST_KILLS_ITSELF = r"""
        import json, os, signal, sys, time
        from procmgr import ProcessManager, procmgr

        def descendants(pid):
            out, todo = [], [pid]
            while todo:
                p = todo.pop()
                for t in os.listdir("/proc/%d/task" % p):
                    with open("/proc/%d/task/%s/children" % (p, t)) as f:
                        kids = [int(x) for x in f.read().split()]
                    out += kids
                    todo += kids
            return out

        pm = ProcessManager()
        tools = [
            pm.create("plain", ["sleep", "300"]).pid,
            pm.create("stubborn", ["sh", "-c", "trap '' TERM; exec sleep 300"], stop_timeout=1).pid,
            procmgr.create("default-mgr-tool", ["sleep", "300"]).pid,
        ]
        tree = pm.create("tree", ["sh", "-c", "sleep 300 & sleep 301 & wait"]).pid
        tools.append(tree)
        end = time.time() + 20
        while len(descendants(tree)) < 2 and time.time() < end:
            time.sleep(0.01)
        tools += descendants(tree)
        print(json.dumps({"sidecars": [pm.pid, procmgr.pid], "tools": tools,
                          "logs": [pm.log_path, procmgr.log_path]}), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """

    def test_host_sigkilled_with_tools_running(self):
        host, path = support.start_host(self.HOST_KILLS_ITSELF)
        try:
            report = support.read_json_line(host)
            procs = [Proc(pid) for pid in report["sidecars"] + report["tools"]]
            self.assertEqual(len(report["tools"]), 6)
            host.wait(support.DEADLINE)
        finally:
            if host.poll() is None:
                host.kill()
                host.wait()
            host.stdout.close()
            host.stderr.close()
            os.unlink(path)
        self.assertEqual(host.returncode, -signal.SIGKILL)
        self.assertEqual(support.wait_gone(procs), [], "survivors of the SIGKILLed host")
        for log in report["logs"]:  # a killed host cannot clean up its log dirs
            shutil.rmtree(os.path.dirname(log), ignore_errors=True)

    def test_host_exiting_normally_shuts_down_at_exit(self):
        res = support.run_host(r"""
            import json
            from procmgr import ProcessManager, procmgr
            pm = ProcessManager()   # never shut down explicitly
            a = pm.create("a", ["sleep", "300"])
            b = procmgr.create("b", ["sh", "-c", "sleep 300 & wait"])
            print(json.dumps({"sidecars": [pm.pid, procmgr.pid], "tools": [a.pid, b.pid]}))
        """)
        self.assertEqual(res.returncode, 0, res.stderr.decode())
        report = json.loads(res.stdout)
        # atexit shut both managers down before the host exited: nothing to wait for
        still = [pid for pid in report["tools"] if support.running(pid)]
        self.assertEqual(still, [], "atexit did not stop the tools")
        self.assertEqual(support.wait_gone([Proc(p) for p in report["sidecars"]]), [])
        self.assertNotIn(b"Traceback", res.stderr)

    def test_default_manager_starts_lazily(self):
        res = support.run_host(r"""
            import json, os
            def kids():
                with open("/proc/self/task/%d/children" % os.getpid()) as f:
                    return f.read().split()
            from procmgr import procmgr
            before = kids()
            text = repr(procmgr)
            procmgr.running("anything")
            after = kids()
            print(json.dumps({"before": before, "after": after, "repr": text, "pid": procmgr.pid}))
        """)
        self.assertEqual(res.returncode, 0, res.stderr.decode())
        report = json.loads(res.stdout)
        self.assertEqual(report["before"], [], "importing procmgr must not start a sidecar")
        self.assertIn("not started", report["repr"])
        self.assertEqual(report["after"], [str(report["pid"])])


class ForkTest(support.SidecarTestCase):
    SCRIPT = r"""
        import json, multiprocessing, os, sys
        from procmgr import ProcessManager, ProcMgrError, procmgr

        def alive(pid):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"

        pm = ProcessManager()
        t = pm.create("parent-tool", ["sleep", "300"])
        d = procmgr.create("parent-default", ["sleep", "300"])
        out = {"parent": {"sidecar": pm.pid, "default_sidecar": procmgr.pid,
                          "tool": t.pid, "default_tool": d.pid}}

        r, w = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(r)
            res = {}
            for name, call in [("manager", lambda: pm.running("parent-tool")),
                               ("process", t.is_alive),
                               ("stop", t.stop)]:
                try:
                    call()
                    res[name] = "no error"
                except ProcMgrError as e:
                    res[name] = "%s: %s" % (type(e).__name__, e)
            try:
                d.is_alive()
                res["default_process"] = "no error"
            except ProcMgrError as e:
                res["default_process"] = type(e).__name__
            res["shutdown"] = pm.shutdown()   # a no-op here
            res["sees_parent_tag"] = procmgr.running("parent-default")
            c = procmgr.create("child-tool", ["sleep", "300"])
            res["sidecar"] = procmgr.pid
            res["tool"] = c.pid
            res["tool_ppid"] = int(open("/proc/%d/stat" % c.pid).read().rsplit(")", 1)[1].split()[1])
            os.write(w, json.dumps(res).encode())
            os.close(w)
            sys.exit(0)   # runs the inherited atexit hook: must touch only the child's sidecar
        os.close(w)
        data = b""
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
        _, status = os.waitpid(child, 0)
        out["child"] = json.loads(data)
        out["child"]["status"] = status
        out["child"]["tool_alive_after_exit"] = alive(out["child"]["tool"])
        out["after_fork"] = {
            "running": pm.running("parent-tool"), "is_alive": t.is_alive(),
            "default": procmgr.running("parent-default") and d.is_alive(),
            "os": [alive(p) for p in (pm.pid, procmgr.pid, t.pid, d.pid)],
        }

        # multiprocessing with fork: the child uses the default manager and exits
        # through os._exit (no atexit); its own sidecar must still clean up.
        def mp_child(q):
            p = procmgr.create("mp-tool", ["sleep", "300"])
            q.put({"sidecar": procmgr.pid, "tool": p.pid, "log": procmgr.log_path,
                   "sees_parent": procmgr.running("parent-default")})

        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        proc = ctx.Process(target=mp_child, args=(q,))
        proc.start()
        out["mp"] = q.get(timeout=30)
        proc.join(30)
        out["mp"]["exitcode"] = proc.exitcode
        out["after_mp"] = [alive(p) for p in (pm.pid, procmgr.pid, t.pid, d.pid)]
        print(json.dumps(out))
    """

    def test_fork(self):
        res = support.run_host(self.SCRIPT, timeout=90)
        self.assertEqual(res.returncode, 0, res.stderr.decode())
        out = json.loads(res.stdout)
        parent, child = out["parent"], out["child"]

        # an explicit manager (and its Processes) refuses to work in the child
        for name in ("manager", "process", "stop"):
            self.assertTrue(child[name].startswith("ProcMgrError"), child[name])
            self.assertIn("fork", child[name])
        self.assertEqual(child["shutdown"], 0)
        # a Process of the default manager from before the fork names no tool of the child's
        self.assertEqual(child["default_process"], "NoSuchTagError")
        # the default manager started a sidecar of the child's own
        self.assertFalse(child["sees_parent_tag"])
        self.assertNotIn(child["sidecar"], (parent["sidecar"], parent["default_sidecar"]))
        self.assertEqual(child["tool_ppid"], child["sidecar"])
        self.assertEqual(child["status"], 0)
        self.assertFalse(child["tool_alive_after_exit"], "the child's atexit did not stop its tool")
        # ... and the parent's sidecars and tools were never touched
        self.assertEqual(out["after_fork"], {"running": True, "is_alive": True, "default": True,
                                             "os": [True, True, True, True]})
        # multiprocessing(fork) child: own sidecar, cleaned up although atexit never ran
        mp = out["mp"]
        self.assertFalse(mp["sees_parent"])
        self.assertNotIn(mp["sidecar"], (parent["sidecar"], parent["default_sidecar"]))
        self.assertEqual(mp["exitcode"], 0)
        self.assertEqual(out["after_mp"], [True, True, True, True])
        self.assertEqual(support.wait_gone([Proc(mp["tool"]), Proc(mp["sidecar"])]), [])
        shutil.rmtree(os.path.dirname(mp["log"]), ignore_errors=True)
        # the host's own exit stopped the parent's tools
        self.assertEqual(
            [pid for pid in (parent["tool"], parent["default_tool"]) if support.running(pid)], []
        )


class OutputTest(support.SidecarTestCase):
    SCRIPT = r"""
        import sys
        from procmgr import procmgr, output_option
        OUTPUT = %s
        fake = '{"jsonrpc":"2.0","id":2,"result":true}'
        p = procmgr.create("talker", ["sh", "-c",
            "echo TOOL-OUT-LINE; echo '" + fake + "'; echo TOOL-ERR-LINE >&2"], OUTPUT)
        assert p.wait(30) == 0
        # the protocol stream is intact: more calls work and see the truth
        q = procmgr.create("after", ["sleep", "300"])
        assert procmgr.running("after") and q.is_alive()
        assert [x.tag for x in procmgr.list()] == ["after", "talker"]
        q.stop()
        print("HOST-DONE", flush=True)
    """

    def test_stdout_output_reaches_the_hosts_stdout_and_stderr(self):
        res = support.run_host(self.SCRIPT % "output_option.STDOUT")
        self.assertEqual(res.returncode, 0, res.stderr.decode())
        out, err = res.stdout.decode(), res.stderr.decode()
        self.assertIn("TOOL-OUT-LINE\n", out)
        self.assertIn('{"jsonrpc":"2.0","id":2,"result":true}\n', out)
        self.assertIn("HOST-DONE\n", out)
        self.assertIn("TOOL-ERR-LINE\n", err)
        self.assertNotIn("TOOL-OUT-LINE", err)
        self.assertNotIn("not JSON", err)

    def test_stdout_output_works_for_a_host_with_fd_0_closed(self):
        # os.dup(1) would then return 0, which is no place to hand over stdout
        res = support.run_host("import os\nos.close(0)\n" + textwrap.dedent(self.SCRIPT % "output_option.STDOUT"))
        self.assertEqual(res.returncode, 0, res.stderr.decode())
        self.assertIn("TOOL-OUT-LINE\n", res.stdout.decode())
        self.assertIn("TOOL-ERR-LINE\n", res.stderr.decode())

    def test_discard_output_goes_nowhere(self):
        res = support.run_host(self.SCRIPT % "output_option.DISCARD")
        self.assertEqual(res.returncode, 0, res.stderr.decode())
        self.assertEqual(res.stdout.decode(), "HOST-DONE\n")
        self.assertNotIn("TOOL-", res.stderr.decode())


if __name__ == "__main__":
    unittest.main()
