"""A PEP 517 build backend in pure standard library, for offline installs.

``pip install ./clients/python`` normally needs setuptools and wheel, which an
offline machine may lack (Python 3.12+ ships neither).  This backend needs
neither: it zips the client's pure-Python files into a wheel itself, and with
them the procmgr sidecar, compiled with Go for the target platform, at
``procmgr/_bin/procmgr``.  The wheel is then a platform wheel
(``procmgr-<version>-py3-none-<platform tags>.whl``): once installed, nothing
needs setting for the client to find its sidecar.

* From the repository, ``pip install --no-build-isolation --no-index
  ./clients/python`` compiles the Go module two directories up.
* An sdist carries the Go module with its dependencies vendored under
  ``go/``, so installing it needs Go and nothing from the network.
* Without Go (or with one too old) the build stops with a message saying
  which Go is needed and the two ways out: install Go, or install a prebuilt
  wheel.

The sidecar is built with CGO_ENABLED=0 and -trimpath (a static Linux binary,
so one wheel serves glibc and musl: it carries both manylinux2014 and
musllinux_1_1 tags), and its ``--version`` is the package version
(``-ldflags -X main.version=...``).

``config_settings`` (``pip wheel --config-settings target=linux/arm64``) or
$PROCMGR_TARGET choose another GOOS/GOARCH; $GO names the go command.  Run as a
script (``python3 procmgr_build.py wheel --target darwin/arm64 --out dist``) it
is what ``make wheel`` and ``make wheels`` call.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "procmgr"
SUMMARY = (
    "Start tagged helper tools from a Python session and be sure none outlives it "
    "(client of the procmgr sidecar)"
)
REQUIRES_PYTHON = ">=3.8"
#: Where the sidecar lives inside the wheel (procmgr/_binary.py looks there).
BINARY_PATH = NAME + "/_bin/procmgr"
#: The platforms a wheel can be built for (GOOS/GOARCH).
TARGETS = ("linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64")
#: How long one `go build` may take: a cold cross-build on a loaded machine is minutes.
GO_BUILD_TIMEOUT = 1800

_MACHINES = {
    "x86_64": "amd64", "amd64": "amd64", "x64": "amd64",
    "aarch64": "arm64", "arm64": "arm64", "armv8l": "arm64",
}
_WHEEL_ARCH = {"amd64": ("x86_64", "x86_64"), "arm64": ("aarch64", "arm64")}  # linux, macOS


class BuildError(Exception):
    """The wheel cannot be built here; the message says why and what to do."""


def _version() -> str:
    with open(os.path.join(ROOT, NAME, "__init__.py"), encoding="utf-8") as f:
        m = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)
    if not m:
        raise RuntimeError("no __version__ in %s/__init__.py" % NAME)
    return m.group(1)


def _package_files():
    """(archive path, file path) of every file the package ships (the sidecar aside)."""
    pkg = os.path.join(ROOT, NAME)
    for dirpath, dirnames, filenames in os.walk(pkg):
        dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", "_bin"))
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
        "Classifier: Operating System :: MacOS\n"
        "Classifier: Typing :: Typed\n"
        "Description-Content-Type: text/markdown\n\n%s"
        % (NAME, _version(), SUMMARY, REQUIRES_PYTHON, readme)
    )


def _dist_info() -> str:
    return "%s-%s.dist-info" % (NAME, _version())


# -- targets and tags -----------------------------------------------------------------


def host_target() -> str:
    """This machine as GOOS/GOARCH."""
    goos = {"linux": "linux", "darwin": "darwin"}.get(sys.platform)
    goarch = _MACHINES.get(platform.machine().lower())
    if goos is None or goarch is None:
        raise BuildError(
            "procmgr's sidecar runs on Linux and macOS, x86_64 and arm64; this is %s %s"
            % (sys.platform, platform.machine())
        )
    return "%s/%s" % (goos, goarch)


def _target(config_settings) -> str:
    target = (config_settings or {}).get("target") or os.environ.get("PROCMGR_TARGET") or host_target()
    if target not in TARGETS:
        raise BuildError("unknown target %r: want one of %s" % (target, ", ".join(TARGETS)))
    return target


def _macos_min(go_version) -> str:
    """The oldest macOS a binary of this Go release runs on (Go's release notes)."""
    if go_version >= (1, 25):
        return "12_0"
    if go_version >= (1, 23):
        return "11_0"
    return "10_15"


def platform_tags(target: str, go_version=(1, 22)) -> list:
    """The wheel's platform tags.  A static Linux binary runs on glibc and musl alike."""
    goos, goarch = target.split("/")
    linux_arch, mac_arch = _WHEEL_ARCH[goarch]
    if goos == "linux":
        return ["manylinux2014_" + linux_arch, "musllinux_1_1_" + linux_arch]
    mac_min = _macos_min(go_version)
    if goarch == "arm64" and mac_min < "11_0":  # the first macOS on Apple silicon
        mac_min = "11_0"
    return ["macosx_%s_%s" % (mac_min, mac_arch)]


# -- Go -------------------------------------------------------------------------------


def go_module_dir() -> str:
    """The sidecar's Go module: go/ in an sdist, else the repository root."""
    for d in (os.path.join(ROOT, "go"), os.path.dirname(os.path.dirname(ROOT))):
        if os.path.isfile(os.path.join(d, "go.mod")) and os.path.isfile(os.path.join(d, "main.go")):
            return d
    raise BuildError(
        "the procmgr sidecar's Go source is not here (looked for go/go.mod in %s and for the "
        "repository root above it): build from a clone of the repository or from an sdist"
        % ROOT
    )


def go_required(module_dir: str) -> str:
    """The `go` line of go.mod: the oldest Go that builds the sidecar."""
    with open(os.path.join(module_dir, "go.mod"), encoding="utf-8") as f:
        m = re.search(r"^go\s+(\d+\.\d+(?:\.\d+)?)\s*$", f.read(), re.M)
    if not m:
        raise BuildError("no go line in %s/go.mod" % module_dir)
    return m.group(1)


def _version_tuple(v: str):
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def _ways_out(required: str) -> str:
    return (
        "Either install Go %s or newer (https://go.dev/dl/) and retry, or install a prebuilt "
        "wheel, which holds the sidecar and needs no Go: on a machine with Go run `make wheel` "
        "(this machine's platform) or `make wheels` (Linux and macOS, x86_64 and arm64) in the "
        "repository, then `pip install dist/procmgr-<version>-py3-none-<platform>.whl`."
        % required
    )


def _go_env(target: str) -> dict:
    goos, goarch = target.split("/")
    env = dict(os.environ, CGO_ENABLED="0", GOOS=goos, GOARCH=goarch)
    # Never fetch a newer toolchain behind the user's back: the build is offline.
    env.setdefault("GOTOOLCHAIN", "local")
    return env


#: Where Go's installer puts it, for a go that is not on PATH yet.
GO_FALLBACKS = ("/usr/local/go/bin/go",)


def find_go(module_dir: str):
    """(go command, its version tuple), or BuildError naming the Go needed and the ways out.

    $GO, when set, is the only candidate; else go on PATH, $GOROOT/bin/go and
    GO_FALLBACKS, in that order.
    """
    required = go_required(module_dir)
    if os.environ.get("GO"):
        candidates = [os.environ["GO"]]
        where = "$GO=%s is not a command" % os.environ["GO"]
    else:
        candidates = [shutil.which("go")]
        if os.environ.get("GOROOT"):
            candidates.append(os.path.join(os.environ["GOROOT"], "bin", "go"))
        candidates += GO_FALLBACKS
        where = "not on PATH, $GO unset" + "".join(", not " + c for c in candidates[1:])
    go = next((c for c in candidates if c and shutil.which(c)), None)
    if go is None:
        raise BuildError(
            "building the procmgr wheel compiles its Go sidecar and needs Go %s or newer, but no "
            "`go` command was found (%s).\n%s" % (required, where, _ways_out(required))
        )
    try:
        out = subprocess.run(
            # Outside any module: a go.mod asking for a newer Go would make this fail.
            [go, "env", "GOVERSION"], cwd="/", env=_go_env(host_target()), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=120, check=True,
        ).stdout.decode(errors="replace").strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError("%s does not run (%s).\n%s" % (go, exc, _ways_out(required))) from exc
    have = _version_tuple(out)
    if out.startswith("devel"):  # a Go built from its own tip: newer than any release
        return go, (99, 0)
    switching = os.environ.get("GOTOOLCHAIN", "local") != "local"  # the user lets Go fetch one
    if not out.startswith("go") or (have < _version_tuple(required) and not switching):
        raise BuildError(
            "building the procmgr wheel needs Go %s or newer; %s is %s.\n%s"
            % (required, go, out or "of unknown version", _ways_out(required))
        )
    return go, have


def build_sidecar(target: str, out_path: str):
    """Compile the sidecar for target into out_path; returns the Go version used."""
    module_dir = go_module_dir()
    go, go_version = find_go(module_dir)
    cmd = [go, "build", "-trimpath", "-buildvcs=false",
           "-ldflags", "-s -w -X main.version=" + _version(), "-o", out_path]
    if os.path.isdir(os.path.join(module_dir, "vendor")):
        cmd.insert(2, "-mod=vendor")  # an sdist: everything is here, nothing is fetched
    cmd.append(".")
    try:
        proc = subprocess.run(
            cmd, cwd=module_dir, env=_go_env(target), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=GO_BUILD_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise BuildError("`%s` took over %d s" % (" ".join(cmd), GO_BUILD_TIMEOUT)) from exc
    if proc.returncode != 0:
        raise BuildError(
            "`%s` failed in %s (GOOS/GOARCH %s):\n%s"
            % (" ".join(cmd), module_dir, target, proc.stdout.decode(errors="replace"))
        )
    return go_version


# -- wheel and sdist ------------------------------------------------------------------


def _wheel_file(tags) -> str:
    lines = "".join("Tag: py3-none-%s\n" % t for t in tags)
    purelib = "true" if tags == ["any"] else "false"  # a wheel with a binary is platlib
    return "Wheel-Version: 1.0\nGenerator: procmgr_build\nRoot-Is-Purelib: %s\n%s" % (purelib, lines)


def _date():
    return time.gmtime(max(315532800, int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))))[:6]


def _write_wheel(wheel_directory: str, entries, tags) -> str:
    """entries: list of (archive path, bytes, mode).  Adds the dist-info and RECORD."""
    dist_info = _dist_info()
    entries = list(entries) + [
        (dist_info + "/METADATA", _metadata().encode("utf-8"), 0o644),
        (dist_info + "/WHEEL", _wheel_file(tags).encode("utf-8"), 0o644),
    ]
    record = io.StringIO()
    for path, data, _ in entries:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.write("%s,sha256=%s,%d\n" % (path, digest, len(data)))
    record.write("%s/RECORD,,\n" % dist_info)
    entries.append((dist_info + "/RECORD", record.getvalue().encode("utf-8"), 0o644))

    filename = "%s-%s-py3-none-%s.whl" % (NAME, _version(), ".".join(tags))
    date = _date()
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data, mode in entries:
            info = zipfile.ZipInfo(path, date_time=date)
            info.external_attr = (0o100000 | mode) << 16  # a regular file; pip keeps the x bit
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return filename


def _python_entries():
    entries = []
    for arc, full in _package_files():
        with open(full, "rb") as f:
            entries.append((arc, f.read(), 0o644))
    return entries


def _go_sources(module_dir: str):
    """(archive path, file path) of the Go module files the sidecar is built from."""
    for name in ("go.mod", "go.sum"):
        if os.path.isfile(os.path.join(module_dir, name)):
            yield "go/" + name, os.path.join(module_dir, name)
    skip = {"tests", "bench", "clients", "vendor", "bin", "dist", "docs", "testdata"}
    for dirpath, dirnames, filenames in os.walk(module_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in skip and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith((".go", ".s")) and not name.endswith("_test.go"):
                full = os.path.join(dirpath, name)
                yield "go/" + os.path.relpath(full, module_dir).replace(os.sep, "/"), full


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
    return _dist_info()


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def _as_hook(fn):
    """A PEP 517 hook: a BuildError ends the build with its message, not a traceback."""

    def hook(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BuildError as exc:
            sys.exit("\nerror: cannot build procmgr: %s\n" % exc)

    hook.__name__, hook.__doc__ = fn.__name__.lstrip("_"), fn.__doc__
    return hook


def _build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    """A platform wheel: the client plus the sidecar compiled for the target."""
    target = _target(config_settings)
    with tempfile.TemporaryDirectory(prefix="procmgr-wheel-") as tmp:
        binary = os.path.join(tmp, "procmgr")
        go_version = build_sidecar(target, binary)
        with open(binary, "rb") as f:
            sidecar = f.read()
    entries = _python_entries() + [(BINARY_PATH, sidecar, 0o755)]
    return _write_wheel(wheel_directory, entries, platform_tags(target, go_version))


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    """PEP 660: a wheel whose .pth file puts this source tree on sys.path.

    No sidecar inside: an editable install finds it through $PROCMGR_BIN or PATH.
    """
    pth = [("_%s_editable.pth" % NAME, (ROOT + "\n").encode(), 0o644)]
    return _write_wheel(wheel_directory, pth, ["any"])


def _build_sdist(sdist_directory, config_settings=None):
    """The client, this backend and the sidecar's Go module with its dependencies vendored."""
    base = "%s-%s" % (NAME, _version())
    filename = base + ".tar.gz"
    files = [(arc, full) for arc, full in _package_files()]
    for extra in ("pyproject.toml", "README.md", "build_backend/procmgr_build.py"):
        full = os.path.join(ROOT, extra)
        if os.path.exists(full):
            files.append((extra, full))
    module_dir = go_module_dir()
    files += list(_go_sources(module_dir))
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    with tempfile.TemporaryDirectory(prefix="procmgr-sdist-") as tmp:
        vendor = os.path.join(tmp, "vendor")
        if os.path.isdir(os.path.join(module_dir, "vendor")):
            vendor = os.path.join(module_dir, "vendor")  # an sdist of an sdist
        else:
            go, _ = find_go(module_dir)
            proc = subprocess.run(
                [go, "mod", "vendor", "-o", vendor], cwd=module_dir, env=_go_env(host_target()),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=GO_BUILD_TIMEOUT,
            )
            if proc.returncode != 0:
                raise BuildError("`go mod vendor` failed in %s:\n%s"
                                 % (module_dir, proc.stdout.decode(errors="replace")))
        for dirpath, dirnames, filenames in os.walk(vendor):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                files.append(("go/vendor/" + os.path.relpath(full, vendor).replace(os.sep, "/"), full))
        with tarfile.open(os.path.join(sdist_directory, filename), "w:gz", format=tarfile.PAX_FORMAT) as tf:
            pkg_info = _metadata().encode("utf-8")
            info = tarfile.TarInfo(base + "/PKG-INFO")
            info.size = len(pkg_info)
            info.mtime = mtime
            tf.addfile(info, io.BytesIO(pkg_info))
            for arc, full in files:
                ti = tf.gettarinfo(full, arcname=base + "/" + arc)
                ti.uid = ti.gid = 0
                ti.uname = ti.gname = ""
                ti.mtime = mtime
                with open(full, "rb") as f:
                    tf.addfile(ti, f)
    return filename


build_wheel = _as_hook(_build_wheel)
build_sdist = _as_hook(_build_sdist)


# -- make wheel / make wheels ----------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="procmgr_build.py", description="Build procmgr wheels and sdists.")
    p.add_argument("kind", choices=("wheel", "sdist"))
    p.add_argument("--target", action="append", default=[],
                   help="GOOS/GOARCH to build a wheel for (repeatable; default: this machine)")
    p.add_argument("--out", default="dist", help="output directory (default: dist)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    try:
        if args.kind == "sdist":
            names = [_build_sdist(args.out)]
        else:
            names = [_build_wheel(args.out, {"target": t} if t else None) for t in args.target or [None]]
    except BuildError as exc:
        print("procmgr_build: %s" % exc, file=sys.stderr)
        return 1
    for name in names:
        path = os.path.join(args.out, name)
        print("%s (%d bytes)" % (path, os.path.getsize(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
