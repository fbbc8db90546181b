"""A PEP 517 build backend in pure standard library, for offline installs.

``pip install ./clients/python`` normally needs setuptools and wheel, which an
offline machine may lack (Python 3.12+ ships neither).  The procmgr client is
a handful of pure-Python files, so this backend zips them into a wheel itself:
``pip install --no-build-isolation --no-index ./clients/python`` then works on
any Python 3.8+ with pip, and nothing is downloaded.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "procmgr"
SUMMARY = (
    "Start tagged helper tools from a Python session and be sure none outlives it "
    "(client of the procmgr sidecar)"
)
REQUIRES_PYTHON = ">=3.8"
TAG = "py3-none-any"


def _version() -> str:
    with open(os.path.join(ROOT, NAME, "__init__.py"), encoding="utf-8") as f:
        m = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)
    if not m:
        raise RuntimeError("no __version__ in %s/__init__.py" % NAME)
    return m.group(1)


def _package_files():
    """(archive path, file path) of every file the package ships."""
    pkg = os.path.join(ROOT, NAME)
    for dirpath, dirnames, filenames in os.walk(pkg):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith((".py", ".typed")):
                full = os.path.join(dirpath, name)
                yield os.path.relpath(full, ROOT).replace(os.sep, "/"), full


def _metadata() -> str:
    try:
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            readme = f.read()
    except OSError:
        readme = ""
    return (
        "Metadata-Version: 2.1\n"
        "Name: %s\nVersion: %s\nSummary: %s\nRequires-Python: %s\n"
        "Classifier: Programming Language :: Python :: 3\n"
        "Classifier: Operating System :: POSIX :: Linux\n"
        "Classifier: Typing :: Typed\n"
        "Description-Content-Type: text/markdown\n\n%s"
        % (NAME, _version(), SUMMARY, REQUIRES_PYTHON, readme)
    )


def _wheel_file() -> str:
    return "Wheel-Version: 1.0\nGenerator: procmgr_build\nRoot-Is-Purelib: true\nTag: %s\n" % TAG


def _dist_info() -> str:
    return "%s-%s.dist-info" % (NAME, _version())


def _write_wheel(wheel_directory: str, entries) -> str:
    """entries: list of (archive path, bytes).  Adds the dist-info and RECORD."""
    dist_info = _dist_info()
    entries = list(entries) + [
        (dist_info + "/METADATA", _metadata().encode("utf-8")),
        (dist_info + "/WHEEL", _wheel_file().encode("utf-8")),
    ]
    record = io.StringIO()
    for path, data in entries:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.write("%s,sha256=%s,%d\n" % (path, digest, len(data)))
    record.write("%s/RECORD,,\n" % dist_info)
    entries.append((dist_info + "/RECORD", record.getvalue().encode("utf-8")))

    filename = "%s-%s-%s.whl" % (NAME, _version(), TAG)
    date = time.gmtime(max(315532800, int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))))[:6]
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in entries:
            info = zipfile.ZipInfo(path, date_time=date)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return filename


# -- PEP 517 hooks -------------------------------------------------------------------


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    path = os.path.join(metadata_directory, _dist_info())
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "METADATA"), "w", encoding="utf-8") as f:
        f.write(_metadata())
    with open(os.path.join(path, "WHEEL"), "w", encoding="utf-8") as f:
        f.write(_wheel_file())
    return _dist_info()


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    entries = []
    for arc, full in _package_files():
        with open(full, "rb") as f:
            entries.append((arc, f.read()))
    return _write_wheel(wheel_directory, entries)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    """PEP 660: a wheel whose .pth file puts this source tree on sys.path."""
    return _write_wheel(wheel_directory, [("_%s_editable.pth" % NAME, (ROOT + "\n").encode())])


def build_sdist(sdist_directory, config_settings=None):
    base = "%s-%s" % (NAME, _version())
    filename = base + ".tar.gz"
    files = [(arc, full) for arc, full in _package_files()]
    for extra in ("pyproject.toml", "README.md", "build_backend/procmgr_build.py"):
        full = os.path.join(ROOT, extra)
        if os.path.exists(full):
            files.append((extra, full))
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz", format=tarfile.PAX_FORMAT) as tf:
        pkg_info = _metadata().encode("utf-8")
        info = tarfile.TarInfo(base + "/PKG-INFO")
        info.size = len(pkg_info)
        info.mtime = int(time.time())
        tf.addfile(info, io.BytesIO(pkg_info))
        for arc, full in files:
            tf.add(full, arcname=base + "/" + arc, recursive=False)
    return filename
