"""Where the client finds its sidecar, and why a candidate will not do.

In this order, the first that is given wins:

1. ``ProcessManager(binary=...)`` (a path, or a bare name looked up on PATH);
2. ``$PROCMGR_BIN``;
3. the sidecar bundled in a platform wheel, ``procmgr/_bin/procmgr``;
4. ``procmgr`` on PATH.

A candidate that is given but unusable is an error naming the file and why
(it does not exist, is a directory, is not executable, or is built for
another operating system or architecture, read from its ELF or Mach-O
header), never a silent fall-through to the next one: the user meant it.
Files in any other format (a script with ``#!``) are left for exec to judge.
"""

from __future__ import annotations

import os
import platform
import shutil
import stat
import struct
import sys
from typing import Any, Optional, Tuple

from ._errors import ProcMgrError

__all__ = ["find_binary", "locate", "BUNDLED", "binary_format", "host_format"]

#: The sidecar a platform wheel carries.
BUNDLED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bin", "procmgr")

#: How a sidecar was found, as ``python -m procmgr`` reports it.
ARGUMENT, ENVIRONMENT, BUNDLED_HOW, PATH = "argument", "environment", "bundled", "PATH"
_ORIGIN = {
    ARGUMENT: "the binary argument",
    ENVIRONMENT: "$PROCMGR_BIN",
    BUNDLED_HOW: "bundled with the package",
    PATH: "on PATH",
}

_HINT = (
    "install the procmgr wheel for this platform (from a clone of the repository: "
    "`make wheel && pip install dist/procmgr-*.whl`), or build the sidecar with `make build` "
    "(or `go build -o bin/procmgr .`) and pass ProcessManager(binary=...), set PROCMGR_BIN=/path/to/procmgr, or put procmgr on PATH"
)

_ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "arm64", 21: "ppc64", 22: "s390x",
                 243: "riscv64", 258: "loong64"}
_MACHO_CPUS = {7: "x86", 0x01000007: "x86_64", 12: "arm", 0x0100000C: "arm64",
               0x01000012: "ppc64"}
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64", "armv8l": "arm64",
                 "i386": "x86", "i686": "x86"}


def host_format() -> Tuple[str, str]:
    """("linux"|"darwin"|..., architecture) of this machine, in binary_format's words."""
    machine = platform.machine().lower()
    return sys.platform, _ARCH_ALIASES.get(machine, machine)


def binary_format(path: str) -> Optional[Tuple[str, Tuple[str, ...]]]:
    """The OS and architectures an executable is built for, read from its header.

    ("linux", ("x86_64",)) for an ELF file (ELF is taken as Linux), ("darwin",
    ("arm64",)) for a Mach-O one, several for a universal Mach-O file, None for
    anything else (a script, an unknown format).
    """
    with open(path, "rb") as f:
        head = f.read(4096)
    if head[:4] == b"\x7fELF" and len(head) >= 20:
        order = "<" if head[5] == 1 else ">"
        (machine,) = struct.unpack(order + "H", head[18:20])
        return "linux", (_ELF_MACHINES.get(machine, "ELF machine %d" % machine),)
    if len(head) >= 8 and head[:4] in (b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe"):
        (cpu,) = struct.unpack("<i", head[4:8])
        return "darwin", (_MACHO_CPUS.get(cpu, "Mach-O CPU %#x" % cpu),)
    if len(head) >= 8 and head[:4] == b"\xca\xfe\xba\xbe":  # universal (fat) Mach-O
        (n,) = struct.unpack(">I", head[4:8])
        if 0 < n < 20:  # beyond that it is a Java class file, which shares the magic
            cpus = [struct.unpack(">i", head[8 + 20 * i:12 + 20 * i])[0] for i in range(n)
                    if len(head) >= 12 + 20 * i]
            return "darwin", tuple(_MACHO_CPUS.get(c, "Mach-O CPU %#x" % c) for c in cpus)
    return None


def _runs_here(fmt: Tuple[str, Tuple[str, ...]]) -> bool:
    host_os, host_arch = host_format()
    os_name, arches = fmt
    if os_name != host_os:
        return False
    if host_arch in arches:
        return True
    # Apple silicon runs x86_64 binaries through Rosetta 2.
    return host_os == "darwin" and host_arch == "arm64" and "x86_64" in arches


def check_binary(path: str, how: str) -> str:
    """path, made absolute, if it can be the sidecar; else ProcMgrError saying why."""
    origin = _ORIGIN[how]
    if os.sep not in path:
        found = shutil.which(path)
        if found is None:
            raise ProcMgrError("procmgr sidecar %r (%s) is not found on PATH; %s" % (path, origin, _HINT))
        path = found
    path = os.path.abspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ProcMgrError("procmgr sidecar %s (%s) does not exist; %s" % (path, origin, _HINT)) from None
    except OSError as exc:
        raise ProcMgrError("procmgr sidecar %s (%s) cannot be examined: %s" % (path, origin, exc)) from None
    if stat.S_ISDIR(st.st_mode):
        raise ProcMgrError(
            "procmgr sidecar %s (%s) is a directory, not the sidecar executable; %s" % (path, origin, _HINT)
        )
    if not stat.S_ISREG(st.st_mode) or not os.access(path, os.X_OK):
        raise ProcMgrError(
            "procmgr sidecar %s (%s) is not executable (mode %s); `chmod +x` it, or %s"
            % (path, origin, stat.filemode(st.st_mode), _HINT)
        )
    try:
        fmt = binary_format(path)
    except OSError as exc:
        raise ProcMgrError("procmgr sidecar %s (%s) cannot be read: %s" % (path, origin, exc)) from None
    if fmt is not None and not _runs_here(fmt):
        host_os, host_arch = host_format()
        raise ProcMgrError(
            "procmgr sidecar %s (%s) is built for another architecture: %s %s, and this machine "
            "is %s %s; %s" % (path, origin, fmt[0], "/".join(fmt[1]), host_os, host_arch, _HINT)
        )
    return path


def locate(binary: Optional[Any] = None) -> Tuple[str, str]:
    """(absolute path of the sidecar, how it was found: argument/environment/bundled/PATH)."""
    if binary is not None:
        return check_binary(os.fspath(binary), ARGUMENT), ARGUMENT
    env = os.environ.get("PROCMGR_BIN")
    if env:
        return check_binary(env, ENVIRONMENT), ENVIRONMENT
    if os.path.lexists(BUNDLED):
        return check_binary(BUNDLED, BUNDLED_HOW), BUNDLED_HOW
    found = shutil.which("procmgr")
    if found:
        return check_binary(found, PATH), PATH
    raise ProcMgrError(
        "cannot find the procmgr sidecar: no binary argument, $PROCMGR_BIN unset, none bundled "
        "at %s (this install is not a platform wheel), and no procmgr on PATH; %s" % (BUNDLED, _HINT)
    )


def find_binary(binary: Optional[Any] = None) -> str:
    """The sidecar to run (see locate)."""
    return locate(binary)[0]
