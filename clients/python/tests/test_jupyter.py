"""A real host: tools created from a cell of a real Jupyter kernel (ipykernel,
driven by jupyter_client) leave nothing when the kernel is restarted or shut
down with ``now=True``, or SIGKILLed (issue 11, item 11).

The kernel runs on an interpreter that has ipykernel (Debian's
python3-ipykernel is for /usr/bin/python3, which need not be the ``python3``
running these tests); it imports this client through PYTHONPATH and finds the
sidecar through PROCMGR_BIN.  A driver script on that interpreter runs the
KernelManager; the test reads what the cell started and checks /proc.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import unittest
from typing import List, Optional

from tests import support
from tests.support import DEADLINE, Proc, wait_gone

#: Starting a kernel on a loaded machine takes a while; this only bounds a hang.
KERNEL_DEADLINE = 90.0

_DRIVER = r'''
import json, os, signal, sys
from jupyter_client import KernelManager

scenario, interpreter, work = sys.argv[1], sys.argv[2], sys.argv[3]
# A kernel spec of our own: the interpreter that has ipykernel, whatever
# `python3` on PATH is.
spec_dir = os.path.join(work, "kernels", "procmgr-test")
os.makedirs(spec_dir)
with open(os.path.join(spec_dir, "kernel.json"), "w") as f:
    json.dump({"argv": [interpreter, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
               "display_name": "procmgr test", "language": "python"}, f)
os.environ["JUPYTER_PATH"] = work
os.environ["JUPYTER_RUNTIME_DIR"] = os.path.join(work, "runtime")
os.environ["JUPYTER_DATA_DIR"] = os.path.join(work, "data")
os.environ["IPYTHONDIR"] = os.path.join(work, "ipython")

CELL = """
import json, os
from procmgr import procmgr
a = procmgr.create("server", ["sleep", "300"])
b = procmgr.create("tree", ["sh", "-c", "sleep 301 & sleep 302 & wait"])
print(json.dumps({"kernel": os.getpid(), "sidecar": procmgr.pid, "tools": [a.pid, b.pid],
                  "tmpdir": procmgr._sidecar.tmpdir}))
"""

def say(obj):
    print(json.dumps(obj), flush=True)

def step():
    # The test has looked at /proc: go on.
    if not sys.stdin.readline():
        sys.exit(3)

km = KernelManager(kernel_name="procmgr-test")
km.start_kernel()
try:
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=%(deadline)r)
    out = []
    def hook(msg):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(msg["content"]["traceback"]))
    reply = kc.execute_interactive(CELL, timeout=%(deadline)r, output_hook=hook)
    if reply["content"]["status"] != "ok":
        say({"error": "".join(out)})
        sys.exit(2)
    say(json.loads("".join(out).strip().splitlines()[-1]))
    step()
    if scenario == "restart":
        km.restart_kernel(now=True)
        kc.wait_for_ready(timeout=%(deadline)r)
        say({"restarted": km.provisioner.process.pid if km.provisioner else None})
        step()
    elif scenario == "shutdown":
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        say({"shut down": True})
        step()
    elif scenario == "sigkill":
        os.kill(km.provisioner.process.pid, signal.SIGKILL)
        say({"killed": True})
        step()
finally:
    if km.is_alive():
        km.shutdown_kernel(now=True)
'''


def _kernel_interpreter() -> Optional[str]:
    """A Python that has ipykernel and jupyter_client, or None."""
    seen = set()
    for cand in (sys.executable, "/usr/bin/python3", shutil.which("python3")):
        if not cand or cand in seen or not os.path.exists(cand):
            continue
        seen.add(cand)
        try:
            ok = subprocess.run(
                [cand, "-c", "import ipykernel, jupyter_client"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                timeout=60,
            ).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return cand
    return None


class JupyterKernelTest(support.SidecarTestCase):
    interpreter: Optional[str] = None

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.interpreter = _kernel_interpreter()

    def setUp(self) -> None:
        if self.interpreter is None:
            self.skipTest(
                "no Python here has ipykernel and jupyter_client: install Debian's "
                "python3-jupyter-client and python3-ipykernel (.ci/run does, with apt-get)"
            )

    def _run(self, scenario: str) -> None:
        work = tempfile.mkdtemp(prefix="procmgr-jupyter-")
        self.addCleanup(shutil.rmtree, work, True)
        driver = os.path.join(work, "driver.py")
        with open(driver, "w") as f:
            f.write(_DRIVER % {"deadline": KERNEL_DEADLINE})
        proc = subprocess.Popen(
            [self.interpreter, driver, scenario, self.interpreter, work],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=support.host_env(), cwd=work,
        )
        self.addCleanup(self._reap, proc)
        first = self._line(proc, KERNEL_DEADLINE)
        self.assertNotIn("error", first, "the cell failed: %s" % first.get("error"))
        kernel, sidecar = Proc(first["kernel"]), Proc(first["sidecar"])
        tools: List[Proc] = [Proc(pid) for pid in first["tools"]]
        tools += [Proc(pid) for pid in support.tree_members(first["tools"][1], expect=2)]
        for p in tools + [kernel, sidecar]:
            self.assertTrue(p.running(), "%r is not running before the %s" % (p, scenario))
        self._go(proc)
        done = self._line(proc, KERNEL_DEADLINE)
        left = wait_gone(tools + [sidecar, kernel])
        self.assertEqual(left, [], "after %s (%r), still running: %r" % (scenario, done, left))
        self.assertTrue(
            support.wait_until(lambda: not os.path.exists(first["tmpdir"])),
            "after %s the session's temp dir %s is still there" % (scenario, first["tmpdir"]),
        )
        self._go(proc)
        _, err = proc.communicate(timeout=KERNEL_DEADLINE)
        self.assertEqual(proc.returncode, 0, "the driver failed: %s" % err.decode()[-2000:])

    def _line(self, proc: subprocess.Popen, timeout: float) -> dict:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            raise AssertionError("the Jupyter driver said nothing within %s s: %s"
                                 % (timeout, proc.stderr.read().decode()[-2000:]))
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=DEADLINE)
            raise AssertionError("the Jupyter driver exited (%s): %s"
                                 % (proc.returncode, proc.stderr.read().decode()[-2000:]))
        return json.loads(line)

    @staticmethod
    def _go(proc: subprocess.Popen) -> None:
        proc.stdin.write(b"go\n")
        proc.stdin.flush()

    @staticmethod
    def _reap(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=DEADLINE)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            try:
                f.close()
            except OSError:
                pass

    def test_restart_kernel_now_leaves_nothing(self) -> None:
        self._run("restart")

    def test_shutdown_kernel_now_leaves_nothing(self) -> None:
        self._run("shutdown")

    def test_sigkilled_kernel_leaves_nothing(self) -> None:
        self._run("sigkill")


if __name__ == "__main__":  # pragma: no cover
    unittest.main()
