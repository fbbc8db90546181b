"""What `make wheels` makes: four platform wheels and an sdist (`make test-wheels`).

Not named test_*.py: cross-building the sidecar for four platforms is slow
with a cold Go cache, so `make test` leaves it to CI's `make test-wheels`.
Each wheel is checked by its tags and by its sidecar's header bytes, read here
independently of the client's own reader; the sdist is installed offline into
a fresh venv, which builds the sidecar from the vendored Go module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import unittest
import zipfile

from . import support
from .test_packaging import clean_env, elf_interpreter, fresh_venv_install

import procmgr

BACKEND = os.path.join(support.CLIENT_DIR, "build_backend", "procmgr_build.py")

# GOOS/GOARCH: (platform tag patterns, header check)
ELF, MACHO64 = b"\x7fELF", b"\xcf\xfa\xed\xfe"
EXPECTED = {
    "linux/amd64": (["manylinux2014_x86_64", "musllinux_1_1_x86_64"], ("elf", 62)),  # EM_X86_64
    "linux/arm64": (["manylinux2014_aarch64", "musllinux_1_1_aarch64"], ("elf", 183)),  # EM_AARCH64
    "darwin/amd64": ([r"macosx_(\d+)_(\d+)_x86_64"], ("macho", 0x01000007)),  # CPU_TYPE_X86_64
    "darwin/arm64": ([r"macosx_(\d+)_(\d+)_arm64"], ("macho", 0x0100000C)),  # CPU_TYPE_ARM64
}


class MakeWheelsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.out = tempfile.mkdtemp(prefix="procmgr-wheels-")
        argv = [sys.executable, BACKEND, "wheel", "--out", cls.out]
        for target in EXPECTED:
            argv += ["--target", target]
        for cmd in (argv, [sys.executable, BACKEND, "sdist", "--out", cls.out]):
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=3600)
            if proc.returncode != 0:
                raise AssertionError("%s failed:\n%s" % (" ".join(cmd), proc.stdout.decode()))
        cls.files = sorted(os.listdir(cls.out))

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.out, ignore_errors=True)

    def wheel_for(self, patterns):
        rx = re.compile(r"^procmgr-%s-py3-none-%s\.whl$"
                        % (re.escape(procmgr.__version__), r"\.".join(patterns)))
        found = [f for f in self.files if rx.match(f)]
        self.assertEqual(len(found), 1, "want one wheel named like %s in %s" % (rx.pattern, self.files))
        return os.path.join(self.out, found[0])

    def test_four_wheels_and_an_sdist(self):
        self.assertEqual(len([f for f in self.files if f.endswith(".whl")]), 4, self.files)
        self.assertIn("procmgr-%s.tar.gz" % procmgr.__version__, self.files)

    def test_each_wheel_is_tagged_for_its_platform_and_holds_a_sidecar_built_for_it(self):
        for target, (patterns, (kind, machine)) in EXPECTED.items():
            with self.subTest(target=target):
                path = self.wheel_for(patterns)
                with zipfile.ZipFile(path) as zf:
                    tags = re.findall(r"^Tag: py3-none-(\S+)$",
                                      zf.read("procmgr-%s.dist-info/WHEEL" % procmgr.__version__).decode(), re.M)
                    self.assertEqual(len(tags), len(patterns))
                    for tag, pattern in zip(tags, patterns):
                        m = re.fullmatch(pattern, tag)
                        self.assertIsNotNone(m, "tag %s is not %s" % (tag, pattern))
                        if m.groups():  # a macOS release a binary of this Go runs on
                            self.assertGreaterEqual((int(m.group(1)), int(m.group(2))),
                                                    (11, 0) if target.endswith("arm64") else (10, 15))
                    info = zf.getinfo("procmgr/_bin/procmgr")
                    self.assertEqual(stat.S_IMODE(info.external_attr >> 16), 0o755)
                    data = zf.read("procmgr/_bin/procmgr")
                if kind == "elf":
                    self.assertEqual(data[:4], ELF)
                    self.assertEqual(data[4], 2, "not ELFCLASS64")
                    self.assertEqual(data[5], 1, "not little-endian")
                    self.assertEqual(struct.unpack("<H", data[18:20])[0], machine)
                    self.assertFalse(elf_interpreter(data), "dynamically linked: not for musl and glibc alike")
                else:
                    self.assertEqual(data[:4], MACHO64)
                    self.assertEqual(struct.unpack("<i", data[4:8])[0], machine)
                    self.assertEqual(struct.unpack("<I", data[12:16])[0], 2, "not MH_EXECUTE")

    def test_sdist_carries_the_go_module_vendored_and_installs_offline(self):
        sdist = os.path.join(self.out, "procmgr-%s.tar.gz" % procmgr.__version__)
        base = "procmgr-%s/" % procmgr.__version__
        with tarfile.open(sdist) as tf:
            names = set(tf.getnames())
        for required in ("PKG-INFO", "pyproject.toml", "build_backend/procmgr_build.py",
                         "procmgr/__init__.py", "procmgr/_binary.py", "go/go.mod", "go/go.sum",
                         "go/main.go", "go/vendor/modules.txt"):
            self.assertIn(base + required, names)
        self.assertFalse([n for n in names if n.endswith("_test.go")])
        self.assertTrue([n for n in names if n.startswith(base + "go/vendor/golang.org/x/sys/unix/")])
        go = shutil.which("go") or "/usr/local/go/bin/go"
        with tempfile.TemporaryDirectory() as d:
            venv = os.path.join(d, "venv")
            py = os.path.join(venv, "bin", "python")
            # No index and the module proxy off: the vendored module is all there is.
            proc = fresh_venv_install(venv, sdist, clean_env(GO=go, GOPROXY="off"))
            self.assertEqual(proc.returncode, 0, proc.stdout.decode())
            proc = subprocess.run([py, "-m", "procmgr", "--json"], cwd=d, env=clean_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
            self.assertEqual(proc.returncode, 0, proc.stdout.decode())
            report = json.loads(proc.stdout.decode())
            self.assertEqual(report["sidecar"]["found"], "bundled")
            self.assertEqual(report["sidecar"]["version"], procmgr.__version__)
            self.assertTrue(report["sidecar"]["path"].startswith(venv + os.sep))


if __name__ == "__main__":
    unittest.main()
