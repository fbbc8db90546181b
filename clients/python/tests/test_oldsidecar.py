"""An older sidecar (protocol 1 too, but no error.data.reason): what still
holds without reading the error's text.

No sidecar: a fake one (tests/test_reasons.py) answers with errors that carry
no reason, as such a sidecar's do.
"""

from __future__ import annotations

import unittest

from procmgr import ProcessInfo, ProcMgrError

from tests.test_reasons import FakeSidecarTestCase, rpc_error


class CloseStdinTest(FakeSidecarTestCase):
    def test_closing_twice_is_idempotent_without_a_reason(self):
        self.sc.replies["write_stdin"] = {"written": 0}
        self.assertIsNone(self.proc.close_stdin())
        self.sc.replies["write_stdin"] = rpc_error(-32602, "stdin of \"t\" was closed", None, tag="t")
        self.assertIsNone(self.proc.close_stdin())
        self.assertIsNone(self.proc.close_stdin())

    def test_a_first_close_that_fails_still_raises(self):
        sent = rpc_error(-32602, "\"t\" was created with stdin \"null\"", None, tag="t")
        self.sc.replies["write_stdin"] = sent
        with self.assertRaises(ProcMgrError) as cm:
            self.proc.close_stdin()
        self.assertIs(cm.exception, sent)

    def test_a_restarted_run_has_a_stdin_of_its_own(self):
        # The sidecar gives every run a new pipe: closing the first run's
        # stdin says nothing of the next run's.
        self.sc.replies["write_stdin"] = {"written": 0}
        self.proc.close_stdin()
        later = ProcessInfo.from_json({"tag": "t", "pid": 4243, "argv": ["tool"], "state": "running",
                                       "alive": True, "restarts": 1})
        self.pm._registry.adopt(later, register=False)
        self.assertEqual(self.proc.pid, 4243)
        sent = rpc_error(-32602, "bad params", None, tag="t")
        self.sc.replies["write_stdin"] = sent
        with self.assertRaises(ProcMgrError) as cm:
            self.proc.close_stdin()
        self.assertIs(cm.exception, sent)


if __name__ == "__main__":
    unittest.main()
