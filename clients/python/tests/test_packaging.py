"""The package installs as a new user installs it: a platform wheel with the
sidecar inside, built offline by the stdlib backend, then `pip install` into a
fresh venv, and the CASA snippet works from anywhere with nothing set."""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import unittest
import zipfile

from . import support

import procmgr


def load_backend():
    path = os.path.join(support.CLIENT_DIR, "build_backend", "procmgr_build.py")
    spec = importlib.util.spec_from_file_location("procmgr_build", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def go_line() -> str:
    with open(os.path.join(support.REPO, "go.mod")) as f:
        return re.search(r"^go (\S+)$", f.read(), re.M).group(1)


def clean_env(**extra) -> dict:
    """A new user's environment: no PROCMGR_BIN, no PYTHONPATH, no bin/ of the repository
    (nor any procmgr) on PATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PROCMGR_BIN", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/bin:/bin"
    env.update(extra)
    return env


def pip_has_python_option() -> bool:
    """Whether this interpreter's pip can install into another one (--python, pip 22.3+)."""
    proc = subprocess.run([sys.executable, "-m", "pip", "--version"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, timeout=120)
    m = re.match(rb"pip (\d+)\.(\d+)", proc.stdout)
    return proc.returncode == 0 and m is not None and (int(m.group(1)), int(m.group(2))) >= (22, 3)


def fresh_venv_install(venv: str, what: str, env: dict) -> subprocess.CompletedProcess:
    """Make a fresh venv and pip-install `what` into it offline (--no-index)."""
    args = ["install", "--no-index", "--no-build-isolation", "--no-cache-dir",
            "--disable-pip-version-check", what]
    py = os.path.join(venv, "bin", "python")
    if pip_has_python_option():  # quicker: no pip copied into the venv
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=300)
        argv = [sys.executable, "-m", "pip", "--python", py] + args
    else:
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
        argv = [py, "-m", "pip"] + args
    return subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=3600)


def this_machine_tags():
    machine = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}[
        os.uname().machine.lower()]
    return ["manylinux2014_" + machine, "musllinux_1_1_" + machine]


def elf_interpreter(data: bytes) -> bool:
    """Whether a 64-bit little-endian ELF image asks for a program interpreter (PT_INTERP)."""
    phoff, = struct.unpack("<Q", data[32:40])
    phentsize, phnum = struct.unpack("<HH", data[54:58])
    return any(struct.unpack("<I", data[phoff + i * phentsize:phoff + i * phentsize + 4])[0] == 3
               for i in range(phnum))


def elf_machine(data: bytes) -> int:
    """e_machine of an ELF image, read from its header as the kernel does."""
    assert data[:4] == b"\x7fELF", data[:4]
    return struct.unpack("<H" if data[5] == 1 else ">H", data[18:20])[0]


class VersionTest(unittest.TestCase):
    def test_versions_agree(self):
        with open(os.path.join(support.CLIENT_DIR, "pyproject.toml")) as f:
            m = re.search(r'^version = "([^"]+)"', f.read(), re.M)
        self.assertEqual(m.group(1), procmgr.__version__)
        # `make build` does not stamp the version: main.go's default must agree too.
        with open(os.path.join(support.REPO, "main.go")) as f:
            m = re.search(r'^var version = "([^"]+)"', f.read(), re.M)
        self.assertEqual(m.group(1), procmgr.__version__)


class WithoutGoTest(unittest.TestCase):
    """Without a usable Go the build stops, naming the Go needed and both ways out."""

    def assert_ways_out(self, message: str) -> None:
        self.assertIn("Go %s or newer" % go_line(), message)
        self.assertIn("https://go.dev/dl/", message)  # way out 1: install Go
        self.assertIn("prebuilt wheel", message)  # way out 2: a wheel built elsewhere
        self.assertIn("make wheel", message)

    def test_no_go_anywhere(self):
        with tempfile.TemporaryDirectory() as d:
            script = textwrap.dedent("""
                import importlib.util, sys
                spec = importlib.util.spec_from_file_location("b", sys.argv[1])
                b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)
                b.GO_FALLBACKS = ()  # this machine has one in /usr/local/go: pretend not
                b.build_wheel(sys.argv[2])  # the PEP 517 hook: exits with the message
            """)
            env = clean_env(PATH=d)  # an empty directory: no go on PATH
            env.pop("GO", None)
            env.pop("GOROOT", None)
            backend = os.path.join(support.CLIENT_DIR, "build_backend", "procmgr_build.py")
            proc = subprocess.run([sys.executable, "-c", script, backend, d], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            out = proc.stdout.decode()
            self.assertEqual(proc.returncode, 1, out)
            self.assertNotIn("Traceback", out)
            self.assertIn("no `go` command was found", out)
            self.assert_ways_out(out)
            self.assertEqual([n for n in os.listdir(d)], [], "a wheel was written without Go")

    def test_pip_install_with_a_go_too_old_says_which_go_is_needed(self):
        with tempfile.TemporaryDirectory() as d:
            go = os.path.join(d, "go")
            with open(go, "w") as f:
                f.write("#!/bin/sh\necho go1.10.8\n")
            os.chmod(go, 0o755)
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--no-index", "--no-build-isolation",
                 "--no-cache-dir", "--target", os.path.join(d, "site"), support.CLIENT_DIR],
                env=clean_env(GO=go), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300,
            )
            out = proc.stdout.decode()
            self.assertNotEqual(proc.returncode, 0, out)
            self.assertIn("%s is go1.10.8" % go, out)
            self.assert_ways_out(out)
            self.assertFalse(os.path.exists(os.path.join(d, "site", "procmgr")), "installed anyway")


class WheelTest(support.SidecarTestCase):
    """One wheel for this machine, built once, as `make wheel` builds it."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix="procmgr-wheel-test-")
        cls.name = load_backend().build_wheel(cls.tmp)
        cls.wheel = os.path.join(cls.tmp, cls.name)

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def test_wheel_is_tagged_for_this_machine_and_holds_an_executable_sidecar(self):
        tags = this_machine_tags()
        self.assertEqual(self.name, "procmgr-%s-py3-none-%s.whl" % (procmgr.__version__, ".".join(tags)))
        with zipfile.ZipFile(self.wheel) as zf:
            names = set(zf.namelist())
            for required in ("procmgr/__init__.py", "procmgr/__main__.py", "procmgr/_binary.py",
                             "procmgr/py.typed", "procmgr/_bin/procmgr"):
                self.assertIn(required, names)
            self.assertFalse([n for n in names if "__pycache__" in n or "tests" in n])
            info = zf.getinfo("procmgr/_bin/procmgr")
            self.assertEqual(stat.S_IMODE(info.external_attr >> 16), 0o755)
            sidecar = zf.read("procmgr/_bin/procmgr")
            dist = "procmgr-%s.dist-info/" % procmgr.__version__
            wheel = zf.read(dist + "WHEEL").decode()
            self.assertEqual(re.findall(r"^Tag: (\S+)$", wheel, re.M), ["py3-none-" + t for t in tags])
            self.assertIn("Root-Is-Purelib: false", wheel)
            meta = zf.read(dist + "METADATA").decode()
            self.assertIn("Name: procmgr", meta)
            self.assertIn("Requires-Python: >=3.8", meta)
            rows = list(csv.reader(io.StringIO(zf.read(dist + "RECORD").decode())))
            self.assertEqual({r[0] for r in rows}, names)
            for path, digest, size in rows:
                if path.endswith("RECORD"):
                    continue
                data = zf.read(path)
                want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
                self.assertEqual(digest, "sha256=" + want.decode(), path)
                self.assertEqual(int(size), len(data), path)
        # Static: no program interpreter, so glibc and musl alike run it.
        with open("/proc/self/exe", "rb") as f:
            self.assertEqual(elf_machine(sidecar), elf_machine(f.read(64)))
        self.assertFalse(elf_interpreter(sidecar), "the sidecar is dynamically linked")
        with open("/bin/sh", "rb") as f:  # the check itself can see one
            self.assertTrue(elf_interpreter(f.read(1 << 16)), "no PT_INTERP found in /bin/sh")

    def test_installed_offline_in_a_fresh_venv_the_casa_snippet_runs_with_nothing_set(self):
        with tempfile.TemporaryDirectory() as d:
            venv = os.path.join(d, "venv")
            py = os.path.join(venv, "bin", "python")
            run = lambda argv, **kw: subprocess.run(  # noqa: E731
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300, **kw)
            proc = fresh_venv_install(venv, self.wheel, clean_env())
            self.assertEqual(proc.returncode, 0, proc.stdout.decode())

            neutral = os.path.join(d, "elsewhere")
            os.mkdir(neutral)
            env = clean_env()
            self.assertIsNone(shutil.which("procmgr", path=env["PATH"]), "a procmgr is on PATH")
            snippet = textwrap.dedent("""
                import json, os
                from procmgr import procmgr              # CASA: from casa_system import procmgr

                procmgr.create("terrific", ["sleep", "60"])
                running = procmgr.running("terrific")
                myproc = procmgr.fetch("terrific")
                alive = myproc.is_alive()
                pid = myproc.pid
                os.kill(pid, 0)                          # the OS has it
                exe = os.readlink("/proc/%d/exe" % procmgr.pid)
                myproc.stop()
                try:
                    os.kill(pid, 0)
                    gone = False
                except ProcessLookupError:
                    gone = True
                import procmgr as pkg
                print(json.dumps({"running": running, "alive": alive, "gone": gone,
                                  "sidecar_exe": exe, "pkg": pkg.__file__}))
            """)
            proc = run([py, "-c", snippet], cwd=neutral, env=env)
            out = proc.stdout.decode()
            self.assertEqual(proc.returncode, 0, out)
            facts = json.loads(out.strip().splitlines()[-1])
            self.assertTrue(facts["running"] and facts["alive"] and facts["gone"], facts)
            self.assertTrue(facts["pkg"].startswith(venv + os.sep), facts)  # not the source tree
            bundled = os.path.join(os.path.dirname(facts["pkg"]), "_bin", "procmgr")
            self.assertEqual(facts["sidecar_exe"], bundled)  # the kernel ran the bundled one

            # The bundled binary's version is the client's.
            proc = run([bundled, "--version"], cwd=neutral, env=env)
            self.assertEqual(proc.stdout.decode().split(), ["procmgr", procmgr.__version__])

            proc = run([py, "-m", "procmgr", "--json"], cwd=neutral, env=env)
            out = proc.stdout.decode()
            self.assertEqual(proc.returncode, 0, out)
            report = json.loads(out)
            self.assertTrue(report["ok"], report)
            self.assertEqual(report["sidecar"]["found"], "bundled")
            self.assertEqual(report["sidecar"]["path"], bundled)
            self.assertEqual(report["sidecar"]["version"], procmgr.__version__)
            self.assertEqual(report["client"]["version"], procmgr.__version__)
            self.assertEqual(report["sidecar"]["protocol"], report["client"]["protocol"])
            self.assertIn(report["cgroup"]["on"], (True, False))

            proc = run([py, "-m", "procmgr"], cwd=neutral, env=env)
            out = proc.stdout.decode()
            self.assertEqual(proc.returncode, 0, out)
            self.assertIn("%s (bundled with the package)" % bundled, out)
            self.assertIn("cgroup mode: o", out)


if __name__ == "__main__":
    unittest.main()
