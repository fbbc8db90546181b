"""A manager nobody holds is done with, even while its parts wait for the cyclic GC.

Events, Registry and Session keep each other alive (the session's hooks), so
after the manager itself is freed by refcount they linger until the next
cyclic collection -- and the reader thread may still hand them a late
notification.  No sidecar: the notifications are given to the handler the
session would give the transport.
"""

from __future__ import annotations

import gc
import logging
import unittest

from procmgr import ProcessManager


class FreedManagerTest(unittest.TestCase):
    def setUp(self) -> None:
        gc.disable()  # the parts' cycle stays uncollected, as between two GC runs
        self.addCleanup(gc.enable)

    def handle_after_free(self, method: str, params: dict) -> None:
        """Free a manager that has callbacks, then give its handler ``method``."""
        m = ProcessManager(_lazy=True)
        heard = []
        m.on_exit(heard.append)
        m.on_state(lambda *a: heard.append(a))
        handler = m._session.on_notification
        ev = m._events
        del m
        self.assertIsNotNone(ev, "the events outlive the manager (the cycle)")
        logger = logging.getLogger("procmgr")
        with self.assertNoLogs(logger, level="ERROR"):
            # No sidecar object is needed: a freed manager's handler must not touch it.
            handler(None, method, params)  # type: ignore[arg-type]
        self.assertEqual(heard, [])

    def test_a_late_exited_event_is_dropped(self):
        self.handle_after_free("exited", {"tag": "t", "pid": 4242, "exit_code": 0, "signal": None})

    def test_a_late_state_event_is_dropped(self):
        self.handle_after_free("state", {
            "seq": 1, "state": "exited", "tag": "t",
            "info": {"tag": "t", "pid": 4242, "argv": ["tool"], "state": "exited", "alive": False,
                     "exit_code": 0},
        })


if __name__ == "__main__":
    unittest.main()
