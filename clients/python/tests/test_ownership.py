"""Each part owns its state: the manager asks a Process to change its own
(no writes to its private attributes), and every stop is built in one place.

No sidecar: the source is read, and a fake sidecar (tests/test_reasons.py)
answers the stops.
"""

from __future__ import annotations

import ast
import os
import unittest

import procmgr
from procmgr import _process
from procmgr._session import SIDECAR_DEFAULT_STOP_TIMEOUT
from procmgr._transport import REPLY_MARGIN

from tests.test_reasons import FakeSidecarTestCase

#: What of a Process's state only the Process (and the registry, which keeps
#: Processes) may touch.
PROCESS_STATE = {"_owns", "_update", "_restart", "_released", "_info", "_generation", "_streams"}


class OwnershipTest(unittest.TestCase):
    def test_the_process_module_does_not_shadow_the_manager_class(self):
        self.assertFalse(hasattr(_process, "ProcessManager"),
                         "_process.py names something else ProcessManager")

    def test_the_manager_touches_no_process_state(self):
        path = os.path.join(os.path.dirname(procmgr.__file__), "_manager.py")
        with open(path) as f:
            tree = ast.parse(f.read())
        found = sorted(
            "%s:%d" % (node.attr, node.lineno)
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in PROCESS_STATE
        )
        self.assertEqual(found, [])


class StopRequestTest(FakeSidecarTestCase):
    def test_the_reply_wait_is_the_grace_plus_the_margin(self):
        registry = self.pm._registry
        self.assertEqual(registry.stop_request("t", None),
                         ({"tag": "t"}, SIDECAR_DEFAULT_STOP_TIMEOUT + REPLY_MARGIN))
        self.assertEqual(registry.stop_request("t", 2), ({"tag": "t", "timeout": 2}, 2 + REPLY_MARGIN))
        registry.set_stop_timeout("t", 7)
        self.assertEqual(registry.stop_request("t", None), ({"tag": "t"}, 7 + REPLY_MARGIN))
        for bad in (-1, float("nan"), True, "1", 86401):
            with self.assertRaises(ValueError):
                registry.stop_request("t", bad)

    def test_both_stops_send_the_same_and_release_the_tag(self):
        stopped = {"tag": "t", "pid": 4242, "argv": ["tool"], "state": "exited", "alive": False,
                   "signal": "SIGTERM"}
        self.sc.replies["stop"] = stopped
        self.assertEqual(self.proc.stop(2), -15)
        self.assertEqual(self.sc.calls, [("stop", {"tag": "t", "timeout": 2})])
        self.assertTrue(self.proc._released)
        proc = self.pm._registry.adopt(procmgr.ProcessInfo.from_json(
            {"tag": "t", "pid": 4242, "argv": ["tool"], "state": "running", "alive": True}), register=True)
        self.assertEqual(self.pm.stop("t", 2), -15)
        self.assertEqual(self.sc.calls[-1], ("stop", {"tag": "t", "timeout": 2}))
        self.assertTrue(proc._released)
        self.assertIsNone(self.pm._registry.holder("t"))


if __name__ == "__main__":
    unittest.main()
