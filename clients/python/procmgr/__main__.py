"""``python -m procmgr``: check this machine's set-up, and say what it gives.

Prints the client's version, which sidecar it found and how (argument,
environment, bundled, PATH), the sidecar's version and protocol, its
features, and whether cgroup mode is on (and if off, why); then starts and
shuts down that sidecar to prove it runs.  Exits 0, or 1 with the reason.
``--json`` prints the same as one JSON object for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any, Dict, List, Optional

from . import ProcessManager, ProcMgrError, __version__
from ._binary import locate
from ._transport import PROTOCOL_VERSION

_HOW = {
    "argument": "given with --binary",
    "environment": "from $PROCMGR_BIN",
    "bundled": "bundled with the package",
    "PATH": "found on PATH",
}


def check(binary: Optional[str] = None) -> Dict[str, Any]:
    """The set-up as a dict; ``ok`` False with ``error`` when the sidecar is unusable."""
    report: Dict[str, Any] = {
        "ok": False,
        "client": {
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "path": os.path.dirname(os.path.abspath(__file__)),
            "python": platform.python_version(),
        },
        "sidecar": None,
        "cgroup": None,
        "notes": [],
    }
    try:
        path, how = locate(binary)
    except ProcMgrError as exc:
        report["error"] = str(exc)
        return report
    sidecar: Dict[str, Any] = {"path": path, "found": how}
    report["sidecar"] = sidecar
    try:
        with ProcessManager(path) as pm:
            hello = dict(pm._connection().hello)
    except ProcMgrError as exc:
        report["error"] = str(exc)
        return report
    for key in ("version", "protocol", "pid", "features", "watchdog_pid"):
        if key in hello:
            sidecar[key] = hello[key]
    cgroup = hello.get("cgroup")
    if not isinstance(cgroup, dict):  # a sidecar from before hello said
        on = "cgroup" in (hello.get("features") or ())
        cgroup = {"on": on} if on else {"on": False, "reason": "unknown (this sidecar's hello does not say)"}
    report["cgroup"] = cgroup
    report["notes"].extend(cgroup_notes(cgroup))
    if hello.get("version") != __version__:
        report["notes"].append(
            "the sidecar's version %s differs from the client's %s (same protocol, so they work "
            "together)" % (hello.get("version"), __version__)
        )
    report["ok"] = True
    return report


# How an ordinary user gets cgroup mode (docs/containment.md): a cgroup v2
# subtree delegated to them, which systemd gives a scope on request.
DELEGATE_HINT = (
    "cgroup mode needs root or a delegated cgroup v2 subtree; as an ordinary user, start "
    "the host in one: systemd-run --user --scope -p Delegate=yes python3 your_script.py"
)


def cgroup_notes(cgroup: Dict[str, Any], euid: Optional[int] = None) -> List[str]:
    """What the user can do about cgroup mode being off: for an ordinary
    user (the check's sidecar is started without --no-cgroup), the hint at
    a delegated subtree; root has nothing to delegate."""
    if euid is None:
        euid = os.geteuid()
    if not cgroup.get("on") and euid != 0:
        return [DELEGATE_HINT]
    return []


def _text(r: Dict[str, Any]) -> str:
    c = r["client"]
    lines: List[str] = [
        "procmgr client %s (protocol %d), Python %s, at %s"
        % (c["version"], c["protocol"], c["python"], c["path"])
    ]
    s = r["sidecar"]
    if s is not None:
        lines.append("sidecar:     %s (%s)" % (s["path"], _HOW.get(s["found"], s["found"])))
        if "version" in s:
            lines.append("version:     %s, protocol %s" % (s["version"], s.get("protocol")))
            lines.append("features:    %s" % ", ".join(s.get("features") or ()))
            wd = s.get("watchdog_pid")
            lines.append("watchdog:    %s" % ("pid %d" % wd if wd else "none"))
    cg = r["cgroup"]
    if cg is not None:
        if cg.get("on"):
            lines.append("cgroup mode: on%s" % (" (%s)" % cg["dir"] if cg.get("dir") else ""))
        else:
            lines.append("cgroup mode: off: %s" % cg.get("reason", "no reason given"))
            lines.append("             (tools are still contained by process groups, their "
                         "environment marks and the watchdog; docs/containment.md)")
    for note in r["notes"]:
        lines.append("note:        " + note)
    if r["ok"]:
        lines.append("ok: the sidecar starts and answers")
    else:
        lines.append("error: " + r["error"])
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m procmgr",
        description="Check the procmgr set-up: which sidecar is found, and what it offers here.",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    ap.add_argument("--binary", help="check this sidecar instead of the one the client would find")
    args = ap.parse_args(argv)
    report = check(args.binary)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(_text(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
