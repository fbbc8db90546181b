"""The package installs offline: the stdlib build backend makes a valid wheel."""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import os
import re
import tempfile
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


class PackagingTest(unittest.TestCase):
    def test_versions_agree(self):
        with open(os.path.join(support.CLIENT_DIR, "pyproject.toml")) as f:
            m = re.search(r'^version = "([^"]+)"', f.read(), re.M)
        self.assertEqual(m.group(1), procmgr.__version__)

    def test_wheel_has_the_package_typed_marker_and_a_valid_record(self):
        backend = load_backend()
        self.assertEqual(backend.get_requires_for_build_wheel(), [])
        with tempfile.TemporaryDirectory() as d:
            name = backend.build_wheel(d)
            self.assertEqual(name, "procmgr-%s-py3-none-any.whl" % procmgr.__version__)
            with zipfile.ZipFile(os.path.join(d, name)) as zf:
                names = set(zf.namelist())
                for required in ("procmgr/__init__.py", "procmgr/_manager.py", "procmgr/py.typed"):
                    self.assertIn(required, names)
                self.assertFalse([n for n in names if "__pycache__" in n or "tests" in n])
                dist = "procmgr-%s.dist-info/" % procmgr.__version__
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


if __name__ == "__main__":
    unittest.main()
