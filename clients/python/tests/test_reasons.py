"""The client tells errors apart by data.reason, never by message text (issue 13).

No sidecar: a manager whose session holds a fake Sidecar that answers each
method with a prepared reply or error.  Every case that branches is checked
both ways: the reason decides, even when the message says otherwise.
"""

from __future__ import annotations

import ast
import os
import unittest
from typing import Any, Dict, List, Optional, Tuple

import procmgr
from procmgr import ProcessInfo, ProcessManager, ProcMgrError, SpawnError, TagInUseError
from procmgr._errors import error_from_rpc


def rpc_error(code: int, message: str, reason: Optional[str], **data: Any) -> ProcMgrError:
    """The exception the transport makes of such an error reply."""
    if reason is not None:
        data["reason"] = reason
    return error_from_rpc({"code": code, "message": message, "data": data}, "method")


class FakeSidecar:
    """Answers calls from ``replies``: method -> a result, or an exception to raise."""

    pid = 1
    alive = True
    log_path = "/nonexistent/sidecar.log"
    features = frozenset({"capture", "stdin", "readiness", "restart", "state-events"})

    def __init__(self) -> None:
        self.environ = dict(os.environ)
        self.env_cache = None
        self.replies: Dict[str, Any] = {}
        self.calls: List[Tuple[str, Dict[str, Any]]] = []

    def call(self, method: str, params: Dict[str, Any], timeout: Optional[float] = None,
             on_abandon: Any = None) -> Any:
        self.calls.append((method, params))
        reply = self.replies[method]
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def abandon(self) -> None:
        pass

    def shutdown(self, timeout: Optional[float], wait: float) -> int:
        return 0


class FakeSidecarTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.sc = FakeSidecar()
        self.pm = ProcessManager(_lazy=True)
        self.pm._session.sidecar = self.sc  # type: ignore[assignment]
        self.addCleanup(setattr, self.pm._session, "sidecar", None)
        info = ProcessInfo.from_json({"tag": "t", "pid": 4242, "argv": ["tool"], "state": "running",
                                      "alive": True})
        self.proc = self.pm._registry.adopt(info, register=True)


class ReasonPropertyTest(unittest.TestCase):
    def test_reason_is_data_reason_or_none(self):
        self.assertEqual(rpc_error(-32602, "m", "not_captured").reason, "not_captured")
        self.assertIsNone(rpc_error(-32602, "m", None).reason)
        self.assertIsNone(ProcMgrError("client-side").reason)
        self.assertIsNone(ProcMgrError("odd", data={"reason": 7}).reason)
        self.assertIsNone(ProcMgrError("odd", data=["reason"]).reason)
        err = rpc_error(-32001, "tag in use", "tag_in_use", tag="t")
        self.assertIsInstance(err, TagInUseError)
        self.assertEqual((err.reason, err.tag, err.code), ("tag_in_use", "t", -32001))


class ReadOutputTest(FakeSidecarTestCase):
    def test_not_captured_gets_the_hint(self):
        self.sc.replies["read_output"] = rpc_error(-32602, "stream stderr: nope", "not_captured", tag="t")
        with self.assertRaises(ProcMgrError) as cm:
            self.proc.read_output("stderr")
        err = cm.exception
        self.assertIn("stderr of 't' is not captured: create it with output=output_option.PIPE", str(err))
        self.assertEqual((err.code, err.reason, err.tag), (-32602, "not_captured", "t"))

    def test_other_invalid_params_pass_unchanged_whatever_the_text(self):
        sent = rpc_error(-32602, "stream not captured (says the text)", "invalid_params", tag="t")
        self.sc.replies["read_output"] = sent
        with self.assertRaises(ProcMgrError) as cm:
            self.proc.read_output()
        self.assertIs(cm.exception, sent)


class StdinTest(FakeSidecarTestCase):
    def test_closing_a_closed_stdin_is_idempotent(self):
        self.sc.replies["write_stdin"] = rpc_error(-32602, "whatever the words", "stdin_closed", tag="t")
        self.assertIsNone(self.proc.close_stdin())
        self.assertEqual(self.sc.calls, [("write_stdin", {"tag": "t", "eof": True})])

    def test_stdin_not_piped_still_raises(self):
        sent = rpc_error(-32602, "stdin was closed (says the text)", "stdin_not_piped", tag="t")
        self.sc.replies["write_stdin"] = sent
        with self.assertRaises(ProcMgrError) as cm:
            self.proc.close_stdin()
        self.assertIs(cm.exception, sent)

    def test_writing_to_a_closed_stdin_raises(self):
        sent = rpc_error(-32602, "stdin was closed", "stdin_closed", tag="t")
        self.sc.replies["write_stdin"] = sent
        with self.assertRaises(ProcMgrError) as cm:
            self.proc.write_stdin("x")
        self.assertIs(cm.exception, sent)


class CreateHintTest(FakeSidecarTestCase):
    def create(self, argv: Any, reason: str, message: str = "exec: no such file") -> SpawnError:
        self.sc.replies["create"] = rpc_error(-32003, message, reason, tag="new")
        with self.assertRaises(SpawnError) as cm:
            self.pm.create("new", argv)
        return cm.exception

    def test_a_str_argv_with_spaces_that_is_no_executable_gets_the_list_hint(self):
        err = self.create("sleep 60", "exec_not_found", "spawn failed")
        self.assertIn("a str argv names one executable (no shell): pass a list, e.g. ['sleep', '60']",
                      str(err))
        self.assertEqual((err.reason, err.tag, err.code), ("exec_not_found", "new", -32003))

    def test_other_spawn_failures_get_no_hint_whatever_the_text(self):
        err = self.create("sleep 60", "spawn_failed", "sleep 60: not found, no such file")
        self.assertNotIn("pass a list", str(err))

    def test_a_list_argv_gets_no_hint(self):
        self.assertNotIn("pass a list", str(self.create(["sleep 60"], "exec_not_found")))
        self.assertNotIn("pass a list", str(self.create("sleep", "exec_not_found")))


class NoMessageBranchingTest(unittest.TestCase):
    def test_no_module_reads_an_errors_message_to_decide(self):
        # A condition (if/while/ternary/assert/boolean operand) that reads
        # ``.message`` or str(<exception>) would branch on text meant for people.
        pkg = os.path.dirname(procmgr.__file__)
        found = []
        for name in sorted(os.listdir(pkg)):
            if not name.endswith(".py"):
                continue
            with open(os.path.join(pkg, name)) as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, (ast.If, ast.While, ast.IfExp, ast.Assert)):
                    for sub in ast.walk(node.test):
                        if isinstance(sub, ast.Attribute) and sub.attr == "message":
                            found.append("%s:%d" % (name, node.lineno))
        self.assertEqual(found, [])


if __name__ == "__main__":
    unittest.main()
