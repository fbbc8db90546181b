"""The client's fast paths (issue 14) keep their guarantees.

create caches the host environment's difference from the sidecar's; list()
reuses the snapshot a Process already holds when the sidecar sent the same;
notifications about tools nobody holds build nothing. Each test checks what
the OS says (/proc, kill(2)), or the public API against it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import unittest

from . import support
from .support import ManagerTestCase, Proc

from procmgr import ProcessInfo


def tearDownModule() -> None:
    support.assert_no_leftovers(__name__)


class EnvironmentCacheTest(ManagerTestCase):
    def test_every_change_to_os_environ_between_creates_reaches_the_next_tool(self):
        first = self.pm.create(self.tag("0"), ["sleep", "300"])  # fills the cache
        self.assertNotIn("PROCMGR_HOT_NEW", support.environ(first.pid))
        home = os.environ.get("HOME")
        steps = [
            # (what to do to os.environ, what the next tool must see)
            (lambda: os.environ.__setitem__("PROCMGR_HOT_NEW", "a"), {"PROCMGR_HOT_NEW": "a"}),
            # same length, other value: a length-based detector would miss it
            (lambda: os.environ.__setitem__("PROCMGR_HOT_NEW", "b"), {"PROCMGR_HOT_NEW": "b"}),
            (lambda: os.environ.pop("PROCMGR_HOT_NEW"), {"PROCMGR_HOT_NEW": None}),
            (lambda: os.environ.__setitem__("HOME", "/nonexistent-home"), {"HOME": "/nonexistent-home"}),
            # back to the sidecar's own value: nothing needs sending, and the tool has it
            (lambda: os.environ.__setitem__("HOME", home or ""), {"HOME": home or ""}),
            (lambda: os.environ.update(PROCMGR_HOT_A="1", PROCMGR_HOT_B="2"),
             {"PROCMGR_HOT_A": "1", "PROCMGR_HOT_B": "2"}),
        ]
        try:
            for i, (change, want) in enumerate(steps, 1):
                change()
                p = self.pm.create(self.tag(str(i)), ["sleep", "300"])
                env = support.environ(p.pid)
                for k, v in want.items():
                    self.assertEqual(env.get(k), v, "step %d: %s in %r" % (i, k, sorted(env)))
                # and unchanged os.environ again (the cached path) gives the same
                q = self.pm.create(self.tag("%d-again" % i), ["sleep", "300"])
                again = support.environ(q.pid)
                for k, v in want.items():
                    self.assertEqual(again.get(k), v, "step %d again: %s in %r" % (i, k, sorted(again)))
        finally:
            for k in ("PROCMGR_HOT_NEW", "PROCMGR_HOT_A", "PROCMGR_HOT_B"):
                os.environ.pop(k, None)
            if home is None:
                os.environ.pop("HOME", None)
            else:
                os.environ["HOME"] = home

    def test_per_call_env_does_not_leak_into_the_cache(self):
        a = self.pm.create(self.tag("a"), ["sleep", "300"], env={"PROCMGR_HOT_ONCE": "1", "PATH": None})
        b = self.pm.create(self.tag("b"), ["sleep", "300"])
        env_a, env_b = support.environ(a.pid), support.environ(b.pid)
        self.assertEqual(env_a.get("PROCMGR_HOT_ONCE"), "1")
        self.assertNotIn("PATH", env_a)
        self.assertNotIn("PROCMGR_HOT_ONCE", env_b)
        self.assertEqual(env_b.get("PATH"), os.environ.get("PATH"))

    def test_threads_changing_os_environ_while_others_create(self):
        # Each thread sets its own variable, then creates: its tool must see it.
        errors = []

        def worker(i: int) -> None:
            try:
                for j in range(5):
                    key = "PROCMGR_HOT_T%d" % i
                    os.environ[key] = str(j)
                    p = self.pm.create(self.tag("%d-%d" % (i, j)), ["sleep", "300"])
                    got = support.environ(p.pid).get(key)
                    if got != str(j):
                        errors.append((key, j, got))
                    p.stop()
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(support.DEADLINE * 3)
                self.assertFalse(t.is_alive(), "a creating thread hung")
        finally:
            for i in range(4):
                os.environ.pop("PROCMGR_HOT_T%d" % i, None)
        self.assertEqual(errors, [])


class ListReuseTest(ManagerTestCase):
    def test_list_follows_changes_after_reusing_snapshots(self):
        procs = [self.pm.create(self.tag(str(i)), ["sleep", "300"]) for i in range(5)]
        first = self.pm.list()
        second = self.pm.list()
        self.assertEqual([p.tag for p in second], sorted(p.tag for p in procs))
        for a, b in zip(first, second):
            self.assertIs(a, b, "one Process per tool")
        victim = procs[2]
        os.kill(victim.pid, signal.SIGKILL)
        self.assertEqual(support.wait_gone([Proc(victim.pid)]), [])

        def seen_dead() -> bool:
            for p in self.pm.list():
                if p.tag == victim.tag:
                    return p._info.returncode == -9 and not p._info.alive
            return False

        self.assertTrue(support.wait_until(seen_dead), "list() never showed the SIGKILLed tool as exited")
        self.assertEqual(victim.returncode, -9)
        for p in procs:
            if p is not victim:
                self.assertTrue(support.running(p.pid))
                self.assertIsNone(p.returncode)


class ProcessInfoTest(unittest.TestCase):
    RAW = {
        "tag": "t", "argv": ["sleep", "1"], "pid": 12, "pgid": 12, "state": "exited",
        "alive": False, "exit_code": None, "signal": "SIGKILL", "restarts": 2,
        "started_at": "2026-12-01T12:32:42.027316306Z", "exited_at": "2026-12-01T12:32:43+02:00",
    }

    def test_from_json_equals_the_constructor_and_stays_frozen(self):
        info = ProcessInfo.from_json(self.RAW)
        again = ProcessInfo(**{f.name: getattr(info, f.name) for f in dataclasses.fields(ProcessInfo)})
        self.assertEqual(info, again)
        self.assertEqual(hash(info), hash(again))
        self.assertEqual(info.argv, ("sleep", "1"))
        self.assertEqual(info.returncode, -9)
        self.assertEqual(info.started_at.microsecond, 27316)
        self.assertEqual(info.exited_at.utcoffset().total_seconds(), 7200)
        self.assertEqual(info.raw, self.RAW)
        self.assertIsNot(info.raw, self.RAW)
        with self.assertRaises(dataclasses.FrozenInstanceError):
            info.pid = 1  # type: ignore[misc]
        self.assertIn("pid=12", repr(info))

    def test_bad_timestamps_give_none(self):
        for bad in ("2026-02-30T00:00:00Z", "2026-12-01T12:00:00+25:00", "yesterday", 5, None):
            info = ProcessInfo.from_json(dict(self.RAW, started_at=bad))
            self.assertIsNone(info.started_at, bad)
        # and the same text twice (the cached path) gives the same answer
        self.assertIsNone(ProcessInfo.from_json(dict(self.RAW, started_at="yesterday")).started_at)


if __name__ == "__main__":
    unittest.main()
