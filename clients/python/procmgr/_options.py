"""Options of ``create``: readiness conditions and restart policies.

Both are small immutable objects that turn into the protocol's JSON; ``create``
also takes the protocol's own dicts (and a plain policy name for ``restart``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

from ._seconds import optional_seconds

__all__ = ["Ready", "Restart", "ready_params", "restart_params", "DEFAULT_READY_TIMEOUT"]

#: The sidecar's readiness timeout when none is given.
DEFAULT_READY_TIMEOUT = 10.0

_POLICIES = ("never", "on-failure", "always")


def _pattern_text(pattern: Any) -> str:
    """A regex for the sidecar (RE2 syntax): a str, or a compiled pattern whose
    IGNORECASE / MULTILINE / DOTALL flags become inline flags."""
    if isinstance(pattern, re.Pattern):
        if not isinstance(pattern.pattern, str):
            raise TypeError("the readiness pattern must be a str pattern, not bytes")
        flags = ""
        if pattern.flags & re.IGNORECASE:
            flags += "i"
        if pattern.flags & re.MULTILINE:
            flags += "m"
        if pattern.flags & re.DOTALL:
            flags += "s"
        return ("(?%s)" % flags if flags else "") + pattern.pattern
    if isinstance(pattern, str):
        re.compile(pattern)  # a clear error here rather than from the sidecar
        return pattern
    raise TypeError("a readiness pattern must be a str or re.Pattern, not %r" % (pattern,))


@dataclass(frozen=True)
class Ready:
    """When a new tool counts as ready; ``create`` returns only then.

    Build one with a class method::

        Ready.output(r"^listening on", timeout=5)   # a line of captured stdout/stderr matches
        Ready.path("/tmp/tool.sock", timeout=5)     # the file exists (relative: to the tool's cwd)
        Ready.tcp(8080, timeout=5)                   # 127.0.0.1:8080 accepts a connection

    If the condition does not hold within ``timeout`` seconds (default 10), or
    the tool exits first, the tool is stopped and ``create`` raises
    NotReadyError.  ``Ready.output`` needs captured output
    (``output=output_option.PIPE``); its pattern is matched by the sidecar in
    RE2 syntax (Python's ``re`` without backreferences or lookaround), line by
    line.  With a restart policy each later run is checked too, and announced
    by a "ready" state event.
    """

    kind: str  # "output", "path" or "tcp"
    target: str
    timeout: Optional[float] = None

    def __post_init__(self) -> None:
        if self.kind not in ("output", "path", "tcp"):
            raise ValueError('Ready kind must be "output", "path" or "tcp", not %r' % (self.kind,))
        if not isinstance(self.target, str) or not self.target:
            raise ValueError("Ready %s needs a non-empty target" % self.kind)
        optional_seconds(self.timeout, "ready timeout", sent=True)

    @classmethod
    def output(cls, pattern: Union[str, "re.Pattern[str]"], timeout: Optional[float] = None) -> "Ready":
        """Ready once a line of the tool's captured stdout or stderr matches ``pattern``."""
        return cls("output", _pattern_text(pattern), timeout)

    @classmethod
    def path(cls, path: Union[str, "os.PathLike[str]"], timeout: Optional[float] = None) -> "Ready":
        """Ready once ``path`` exists (a relative path is taken from the tool's cwd)."""
        p = os.fspath(path)
        if isinstance(p, bytes):
            p = os.fsdecode(p)
        return cls("path", p, timeout)

    @classmethod
    def tcp(cls, address: Union[int, str, Tuple[str, int]], timeout: Optional[float] = None) -> "Ready":
        """Ready once ``address`` accepts a TCP connection.

        ``address``: a port (on 127.0.0.1), ``"host:port"``, or ``(host, port)``.
        """
        if isinstance(address, bool):
            raise TypeError("a tcp address must be a port, 'host:port' or (host, port)")
        if isinstance(address, int):
            text = "127.0.0.1:%d" % address
        elif isinstance(address, tuple) and len(address) == 2:
            host, port = address
            text = ("[%s]:%d" if ":" in str(host) else "%s:%d") % (host, int(port))
        elif isinstance(address, str):
            text = address
        else:
            raise TypeError("a tcp address must be a port, 'host:port' or (host, port), not %r" % (address,))
        return cls("tcp", text, timeout)

    @property
    def wait_seconds(self) -> float:
        """How long the sidecar may wait for this condition."""
        return DEFAULT_READY_TIMEOUT if self.timeout is None else self.timeout

    def to_json(self) -> Dict[str, Any]:
        obj: Dict[str, Any] = {self.kind: self.target}
        if self.timeout is not None:
            obj["timeout"] = self.timeout
        return obj


@dataclass(frozen=True)
class Restart:
    """A restart policy for ``create(..., restart=...)``.

    ``policy``: "never", "on-failure" (a non-zero status or a killing signal)
    or "always" (any exit not caused by ``stop``).  The n-th restart inside
    ``window`` seconds waits ``initial_backoff * 2**n`` seconds, capped at
    ``max_backoff``, jittered uniformly into [d/2, d]; when ``max_restarts``
    restarts already happened inside the window the tool becomes "fatal"
    instead.  None leaves the sidecar's default (max_restarts 5, window 60 s,
    initial_backoff 0.5 s, max_backoff 30 s).  ``stop()`` cancels a pending
    restart.  ``create(..., restart="on-failure")`` is short for
    ``Restart("on-failure")``.
    """

    policy: str = "on-failure"
    max_restarts: Optional[int] = None
    window: Optional[float] = None
    initial_backoff: Optional[float] = None
    max_backoff: Optional[float] = None

    def __post_init__(self) -> None:
        if self.policy not in _POLICIES:
            raise ValueError("restart policy must be one of %s, not %r" % (", ".join(_POLICIES), self.policy))
        if self.max_restarts is not None and (
            isinstance(self.max_restarts, bool) or not isinstance(self.max_restarts, int) or self.max_restarts < 0
        ):
            raise ValueError("max_restarts must be a non-negative int, not %r" % (self.max_restarts,))
        optional_seconds(self.window, "window", sent=True)
        optional_seconds(self.initial_backoff, "initial_backoff", sent=True)
        optional_seconds(self.max_backoff, "max_backoff", sent=True)

    def wants_restart(self, returncode: Optional[int]) -> bool:
        """Would this policy restart a run that ended with ``returncode``?"""
        if self.policy == "always":
            return True
        if self.policy == "on-failure":
            return returncode != 0
        return False

    def to_json(self) -> Dict[str, Any]:
        obj: Dict[str, Any] = {"policy": self.policy}
        if self.max_restarts is not None:
            obj["max_restarts"] = self.max_restarts
        if self.window is not None:
            obj["window"] = self.window
        backoff: Dict[str, Any] = {}
        if self.initial_backoff is not None:
            backoff["initial"] = self.initial_backoff
        if self.max_backoff is not None:
            backoff["max"] = self.max_backoff
        if backoff:
            obj["backoff"] = backoff
        return obj

    @classmethod
    def from_json(cls, obj: Dict[str, Any]) -> "Restart":
        """The protocol's dict form: {"policy", "max_restarts", "window", "backoff": {"initial", "max"}}."""
        unknown = set(obj) - {"policy", "max_restarts", "window", "backoff"}
        if unknown:
            raise ValueError("unknown restart option(s): %s" % ", ".join(sorted(unknown)))
        backoff = obj.get("backoff") or {}
        if not isinstance(backoff, dict) or set(backoff) - {"initial", "max"}:
            raise ValueError('restart backoff must be {"initial": s, "max": s}, not %r' % (backoff,))
        return cls(
            policy=obj.get("policy", "never"),
            max_restarts=obj.get("max_restarts"),
            window=obj.get("window"),
            initial_backoff=backoff.get("initial"),
            max_backoff=backoff.get("max"),
        )


def ready_params(ready: Any) -> Ready:
    """A Ready from ``create``'s ``ready=`` (a Ready, or the protocol's dict)."""
    if isinstance(ready, Ready):
        return ready
    if isinstance(ready, dict):
        kinds = [k for k in ("output", "path", "tcp") if k in ready]
        unknown = set(ready) - {"output", "path", "tcp", "timeout"}
        if len(kinds) != 1 or unknown:
            raise ValueError(
                'ready must have exactly one of "output", "path", "tcp" (and optionally "timeout"), not %r'
                % (ready,)
            )
        kind = kinds[0]
        maker = {"output": Ready.output, "path": Ready.path, "tcp": Ready.tcp}[kind]
        return maker(ready[kind], timeout=ready.get("timeout"))
    raise TypeError("ready must be a Ready (Ready.output/path/tcp) or a dict, not %r" % (ready,))


def restart_params(restart: Any) -> Restart:
    """A Restart from ``create``'s ``restart=`` (a Restart, a policy name, or the protocol's dict)."""
    if isinstance(restart, Restart):
        return restart
    if isinstance(restart, str):
        return Restart(restart)
    if isinstance(restart, dict):
        return Restart.from_json(restart)
    raise TypeError('restart must be a Restart, a policy name ("on-failure") or a dict, not %r' % (restart,))
