"""Finding the sidecar, checking its protocol, and `python -m procmgr`.

The order is ProcessManager(binary=...), $PROCMGR_BIN, the bundled binary,
PATH; a candidate that will not do is an error naming the file and why.
Whether a rejected file really cannot run is asked of the kernel (exec).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import unittest
from unittest import mock

from . import support

import procmgr
from procmgr import ProcessManager, ProcMgrError, SidecarError
from procmgr import _binary


def other_arch_elf() -> bytes:
    """A minimal ELF header for the 64-bit architecture this machine is not."""
    machine = 62 if os.uname().machine not in ("x86_64", "amd64") else 183  # x86_64 or aarch64
    head = bytearray(64)
    head[:7] = b"\x7fELF\x02\x01\x01"
    head[16:18] = struct.pack("<H", 2)  # ET_EXEC
    head[18:20] = struct.pack("<H", machine)
    head[20:24] = struct.pack("<I", 1)
    return bytes(head)


MACHO_ARM64 = struct.pack("<IiiI", 0xFEEDFACF, 0x0100000C, 0, 2) + bytes(16)


class DiscoveryTest(support.SidecarTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="procmgr-discovery-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        patcher = mock.patch.dict(os.environ)
        patcher.start()
        self.addCleanup(patcher.stop)
        os.environ.pop("PROCMGR_BIN", None)
        os.environ["PATH"] = "/usr/bin:/bin"
        # The source tree has no bundled sidecar: put one where a wheel would.
        self.bundled = os.path.join(self.dir, "pkg", "_bin", "procmgr")
        patch = mock.patch.object(_binary, "BUNDLED", self.bundled)
        patch.start()
        self.addCleanup(patch.stop)

    def copy_of_sidecar(self, *parts: str) -> str:
        path = os.path.join(self.dir, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copy2(support.BIN, path)
        return path

    def file(self, name: str, data: bytes, mode: int) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        return path

    def test_order_is_argument_environment_bundled_path(self):
        arg = self.copy_of_sidecar("arg", "procmgr")
        env = self.copy_of_sidecar("env", "procmgr")
        onpath = self.copy_of_sidecar("path", "procmgr")
        self.copy_of_sidecar("pkg", "_bin", "procmgr")
        os.environ["PATH"] = os.path.dirname(onpath) + os.pathsep + "/usr/bin:/bin"
        os.environ["PROCMGR_BIN"] = env
        self.assertEqual(_binary.locate(arg), (arg, "argument"))
        self.assertEqual(_binary.locate(), (env, "environment"))
        del os.environ["PROCMGR_BIN"]
        self.assertEqual(_binary.locate(), (self.bundled, "bundled"))
        os.unlink(self.bundled)
        self.assertEqual(_binary.locate(), (onpath, "PATH"))
        # The manager runs what was found: the kernel says which file it is.
        os.environ["PROCMGR_BIN"] = env
        with ProcessManager() as pm:
            self.assertEqual(os.readlink("/proc/%d/exe" % pm.pid), env)
        del os.environ["PROCMGR_BIN"]
        self.copy_of_sidecar("pkg", "_bin", "procmgr")
        with ProcessManager() as pm:
            self.assertEqual(os.readlink("/proc/%d/exe" % pm.pid), self.bundled)

    def test_nothing_found_says_where_it_looked_and_what_to_do(self):
        with self.assertRaises(ProcMgrError) as cm:
            ProcessManager()
        msg = str(cm.exception)
        for part in ("PROCMGR_BIN", self.bundled, "PATH", "make wheel", "pip install"):
            self.assertIn(part, msg)

    def test_a_directory_is_refused_naming_it(self):
        d = os.path.join(self.dir, "adir")
        os.mkdir(d)
        for how in ("argument", "environment", "bundled"):
            with self.subTest(how=how):
                if how == "environment":
                    os.environ["PROCMGR_BIN"] = d
                if how == "bundled":
                    os.environ.pop("PROCMGR_BIN")
                    os.makedirs(self.bundled)
                    d = self.bundled
                with self.assertRaises(ProcMgrError) as cm:
                    ProcessManager(d if how == "argument" else None)
                self.assertIn("%s (" % d, str(cm.exception))
                self.assertIn("is a directory", str(cm.exception))
        with self.assertRaises(PermissionError):  # the kernel agrees: execve gives EACCES
            subprocess.run([d])

    def test_a_file_without_exec_permission_is_refused_naming_it(self):
        path = self.copy_of_sidecar("noexec", "procmgr")
        os.chmod(path, 0o644)
        os.environ["PROCMGR_BIN"] = path
        with self.assertRaises(ProcMgrError) as cm:
            ProcessManager()
        self.assertIn("%s ($PROCMGR_BIN) is not executable" % path, str(cm.exception))
        with self.assertRaises(PermissionError):
            subprocess.run([path])

    def test_a_binary_for_another_architecture_is_refused_naming_it(self):
        elf = self.file("procmgr-other-elf", other_arch_elf(), 0o755)
        with self.assertRaises(ProcMgrError) as cm:
            ProcessManager(elf)
        msg = str(cm.exception)
        self.assertIn("%s (the binary argument) is built for another architecture" % elf, msg)
        self.assertIn("this machine is linux %s" % _binary.host_format()[1], msg)
        with self.assertRaises(OSError) as exc:  # the kernel refuses it too
            subprocess.run([elf])
        self.assertEqual(exc.exception.errno, errno.ENOEXEC)

        macho = self.file("procmgr-macho", MACHO_ARM64, 0o755)
        os.makedirs(os.path.dirname(self.bundled))
        os.symlink(macho, self.bundled)
        with self.assertRaises(ProcMgrError) as cm:
            ProcessManager()
        self.assertIn("%s (bundled with the package) is built for another architecture: darwin arm64"
                      % self.bundled, str(cm.exception))

    def test_the_real_sidecar_is_recognised_as_this_machines(self):
        fmt = _binary.binary_format(support.BIN)
        self.assertEqual(fmt, ("linux", (_binary.host_format()[1],)))
        script = self.file("script", b"#!/bin/sh\nexit 0\n", 0o755)
        self.assertIsNone(_binary.binary_format(script))  # exec judges scripts
        self.assertEqual(_binary.check_binary(script, "argument"), script)


class ProtocolTest(support.SidecarTestCase):
    def test_a_sidecar_of_another_protocol_is_refused_naming_both(self):
        with tempfile.TemporaryDirectory() as d:
            fake = os.path.join(d, "procmgr")
            with open(fake, "w") as f:
                f.write("#!%s\n" % sys.executable + textwrap.dedent("""
                    import json, os, sys
                    with open(os.path.join(os.path.dirname(sys.argv[0]), "pid"), "w") as f:
                        f.write(str(os.getpid()))
                    req = json.loads(sys.stdin.readline())
                    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": {
                        "name": "procmgr", "version": "9.0.0", "protocol": 2, "pid": os.getpid(),
                        "session": "x", "features": []}}) + "\\n")
                    sys.stdout.flush()
                    sys.stdin.read()
                """))
            os.chmod(fake, 0o755)
            with self.assertRaises(SidecarError) as cm:
                ProcessManager(fake)
            msg = str(cm.exception)
            self.assertIn("protocol 2", msg)
            self.assertIn("this client speaks 1", msg)
            self.assertIn(fake, msg)
            with open(os.path.join(d, "pid")) as f:
                pid = int(f.read())
            # The refused sidecar does not linger.
            self.assertTrue(support.wait_until(lambda: not support.running(pid)),
                            "refused sidecar %d still running" % pid)


class CheckSetupTest(support.SidecarTestCase):
    """`python -m procmgr` from the source tree (the installed wheel: test_packaging)."""

    def run_main(self, *args, env=None):
        env = dict(os.environ if env is None else env, PYTHONPATH=support.CLIENT_DIR)
        return subprocess.run([sys.executable, "-m", "procmgr"] + list(args), env=env, cwd="/",
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)

    def test_reports_the_sidecar_and_how_it_was_found(self):
        proc = self.run_main("--json", env=dict(os.environ, PROCMGR_BIN=support.BIN))
        self.assertEqual(proc.returncode, 0, proc.stdout.decode())
        r = json.loads(proc.stdout.decode())
        self.assertTrue(r["ok"])
        self.assertEqual(r["client"]["version"], procmgr.__version__)
        self.assertEqual(r["sidecar"]["path"], os.path.abspath(support.BIN))
        self.assertEqual(r["sidecar"]["found"], "environment")
        self.assertEqual(r["sidecar"]["protocol"], 1)
        self.assertIn("process-group", r["sidecar"]["features"])
        self.assertEqual(r["cgroup"]["on"], "cgroup" in r["sidecar"]["features"])
        self.assertTrue(support.wait_until(lambda: not support.running(r["sidecar"]["pid"])),
                        "python -m procmgr left its sidecar %d running" % r["sidecar"]["pid"])
        if not r["cgroup"]["on"]:
            self.assertTrue(r["cgroup"]["reason"])

    def test_an_ordinary_user_without_cgroup_mode_is_told_how_to_get_it(self):
        from procmgr.__main__ import DELEGATE_HINT, cgroup_notes
        off = {"on": False, "reason": "not root and no delegated cgroup v2: /sys/fs/cgroup/x is not writable"}
        self.assertEqual(cgroup_notes(off, euid=1000), [DELEGATE_HINT])
        self.assertIn("systemd-run --user --scope -p Delegate=yes", DELEGATE_HINT)
        self.assertEqual(cgroup_notes({"on": True, "dir": "/sys/fs/cgroup/x"}, euid=1000), [])
        self.assertEqual(cgroup_notes(off, euid=0), [], "root has no subtree to be delegated")

    def test_text_report_names_the_binary_and_cgroup_mode(self):
        proc = self.run_main(env=dict(os.environ, PROCMGR_BIN=support.BIN))
        out = proc.stdout.decode()
        self.assertEqual(proc.returncode, 0, out)
        self.assertIn("%s (from $PROCMGR_BIN)" % os.path.abspath(support.BIN), out)
        self.assertIn("cgroup mode: o", out)
        self.assertIn("procmgr client %s" % procmgr.__version__, out)

    def test_a_broken_set_up_exits_1_with_the_reason(self):
        proc = self.run_main("--binary", "/")
        out = proc.stdout.decode()
        self.assertEqual(proc.returncode, 1, out)
        self.assertIn("is a directory", out)
        env = {k: v for k, v in os.environ.items() if k != "PROCMGR_BIN"}
        env["PATH"] = "/usr/bin:/bin"
        proc = self.run_main("--json", env=env)
        r = json.loads(proc.stdout.decode())
        self.assertEqual(proc.returncode, 1)
        self.assertFalse(r["ok"])
        self.assertIn("cannot find the procmgr sidecar", r["error"])


if __name__ == "__main__":
    unittest.main()
