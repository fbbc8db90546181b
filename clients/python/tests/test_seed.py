"""The code samples of the CASA page (shared/seed-casa-procmgr.txt), run as written.

Only two things differ from the page: the import (``from procmgr import procmgr``
instead of ``from casa_system import procmgr``) and Python 3's ``print()``.
The restart sample's ``procmgr.create("terrific", ...)`` says "as shown above",
so it gets the first sample's argv.

The samples name /opt/local/bin/my-terrific-tool.  When that path is free and
writable (we run as root here), the test installs a small tool there for the
duration of the run and removes it afterwards, so the samples run verbatim;
otherwise the path is replaced by a temporary one.
"""

from __future__ import annotations

import os
import signal
import tempfile
import textwrap
import unittest

from . import support
from .support import Proc

SEED_PATH = "/opt/local/bin/my-terrific-tool"

SAMPLE_ACCESS = """
from procmgr import procmgr
...
def some_func( ):
    ...
    print(procmgr)
"""

SAMPLE_START = """
procmgr.create("terrific",["/opt/local/bin/my-terrific-tool","arg1","arg2"])
"""

SAMPLE_CHECK = """
procmgr.running("terrific")
"""

SAMPLE_STOP = """
myproc = procmgr.fetch("terrific")
myproc.stop( )
"""

SAMPLE_RESTART = """
procrun = procmgr.running("terrific") # True
myproc = procmgr.fetch("terrific")
try:
    if procrun and not myproc.is_alive(): # crash!
        myproc.stop() # tell procmgr it stopped
        procrun = False
except AttributeError: # fetch returns myproc=None if not created
    pass
if not procrun:
    # start (or restart)
    procmgr.create("terrific", ["/opt/local/bin/my-terrific-tool","arg1","arg2"]) # as shown above
"""

TOOL_SCRIPT = "#!/bin/sh\n# installed by the procmgr client tests; removed after them\nexec sleep 600\n"

_installed = []  # paths we created, to remove
_tool_path = SEED_PATH


def setUpModule():
    global _tool_path
    support.require_binary()
    os.environ["PROCMGR_BIN"] = support.BIN
    created_dirs = []
    try:
        if os.path.exists(SEED_PATH):
            raise OSError("exists")
        d = os.path.dirname(SEED_PATH)
        parts = []
        while not os.path.isdir(d):
            parts.append(d)
            d = os.path.dirname(d)
        for p in reversed(parts):
            os.mkdir(p)
            created_dirs.append(p)
        with open(SEED_PATH, "x") as f:
            f.write(TOOL_SCRIPT)
        os.chmod(SEED_PATH, 0o755)
        _installed.append(SEED_PATH)
        _installed.extend(reversed(created_dirs))
    except OSError:
        for p in reversed(created_dirs):
            try:
                os.rmdir(p)
            except OSError:
                pass
        tmp = tempfile.mkdtemp(prefix="procmgr-seed-")
        _tool_path = os.path.join(tmp, "my-terrific-tool")
        with open(_tool_path, "w") as f:
            f.write(TOOL_SCRIPT)
        os.chmod(_tool_path, 0o755)
        _installed.append(_tool_path)
        _installed.append(tmp)


def tearDownModule():
    from procmgr import procmgr

    procmgr.shutdown()
    for p in _installed:
        try:
            if os.path.isdir(p):
                os.rmdir(p)
            else:
                os.unlink(p)
        except OSError:
            pass
    support.assert_no_leftovers(__name__)


def sample(code: str) -> str:
    return textwrap.dedent(code).replace(SEED_PATH, _tool_path)


class SeedSamplesTest(unittest.TestCase):
    """The page's samples, in the order it shows them, against the default manager."""

    def setUp(self):
        from procmgr import procmgr

        self.ns = {}
        exec(sample(SAMPLE_ACCESS), self.ns)
        self.procmgr = self.ns["procmgr"]
        self.assertIs(self.procmgr, procmgr)
        self.addCleanup(self.procmgr.shutdown)

    def run_sample(self, code):
        exec(sample(code), self.ns)

    def terrific_pid(self):
        p = self.procmgr.fetch("terrific")
        return None if p is None else p.pid

    def test_access_prints_the_manager(self):
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.ns["some_func"]()
        self.assertIn("ProcessManager", out.getvalue())

    def test_start_check_stop(self):
        self.run_sample(SAMPLE_START)
        pid = self.terrific_pid()
        tool = Proc(pid)
        self.assertTrue(tool.running())
        # the installed script exec's sleep
        self.assertTrue(support.wait_until(lambda: support.cmdline(pid) == ["sleep", "600"]))
        self.assertEqual(support.environ(pid).get("PROCMGR_TAG"), "terrific")

        self.run_sample("result = " + sample(SAMPLE_CHECK).strip())
        self.assertIs(self.ns["result"], True)

        self.run_sample(SAMPLE_STOP)
        self.assertTrue(tool.gone(), tool)
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)
        self.run_sample("result = " + sample(SAMPLE_CHECK).strip())
        self.assertIs(self.ns["result"], False)

    def test_tags_must_be_unique(self):
        from procmgr import TagInUseError

        self.run_sample(SAMPLE_START)
        pid = self.terrific_pid()
        with self.assertRaises(TagInUseError):
            self.run_sample(SAMPLE_START)
        self.assertTrue(support.running(pid))

    def test_restart_pattern_when_never_created(self):
        self.run_sample(SAMPLE_RESTART)
        self.assertIs(self.ns["procrun"], False)
        self.assertIsNone(self.ns["myproc"])
        pid = self.terrific_pid()
        self.assertTrue(support.running(pid))

    def test_restart_pattern_leaves_a_healthy_tool_alone(self):
        self.run_sample(SAMPLE_START)
        tool = Proc(self.terrific_pid())
        self.run_sample(SAMPLE_RESTART)
        self.assertIs(self.ns["procrun"], True)
        self.assertEqual(self.terrific_pid(), tool.pid)
        self.assertTrue(tool.running())

    def test_restart_pattern_after_a_crash(self):
        self.run_sample(SAMPLE_START)
        old = Proc(self.terrific_pid())
        os.kill(old.pid, signal.SIGKILL)  # the crash
        self.assertTrue(support.wait_until(lambda: not old.running()))
        # Dead is not yet reaped and reported: the sample asks the sidecar,
        # so wait until the sidecar has seen the exit.
        self.assertEqual(self.procmgr.fetch("terrific").wait(support.DEADLINE), -signal.SIGKILL)
        self.assertTrue(self.procmgr.running("terrific"), "running() stays True after a crash")
        self.run_sample(SAMPLE_RESTART)
        self.assertIs(self.ns["procrun"], False)
        new = Proc(self.terrific_pid())
        self.assertNotEqual(new.pid, old.pid)
        self.assertTrue(new.running())
        self.assertFalse(old.running())
        self.assertEqual(self.ns["myproc"].returncode, -signal.SIGKILL)


if __name__ == "__main__":
    unittest.main()
