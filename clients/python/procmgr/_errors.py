"""Exceptions raised by the procmgr client.

Every exception the client raises on purpose is a :class:`ProcMgrError`, so
``except ProcMgrError`` catches them all.  The JSON-RPC error codes of the
sidecar map onto the subclasses:

=======  ======================
-32001   :class:`TagInUseError`
-32002   :class:`NoSuchTagError`
-32003   :class:`SpawnError`
-32004   :class:`SidecarError` (the sidecar is shutting down)
-32005   :class:`NotReadyError`
=======  ======================

Within a code, ``reason`` (the sidecar's ``error.data.reason``, one stable
word such as "not_captured", "stdin_closed" or "exec_not_found": the table in
docs/protocol.md "Errors") tells the cases apart; the client branches on it,
never on the message, which is written for people.

A sidecar that dies, stops answering, or cannot be started also gives
:class:`SidecarError`; its message names the sidecar's log file (and its
``reason`` is None, like every error the client raises itself).

Two errors come from the client's own waits rather than from a reply:
:class:`ProcMgrTimeoutError` (also a builtin ``TimeoutError``) when a bounded
wait for output or for room on a tool's stdin runs out, and
:class:`OutputEndedError` (also an ``EOFError``) when the output a caller
waits for can no longer come because the tool exited for good.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

__all__ = [
    "ProcMgrError",
    "TagInUseError",
    "NoSuchTagError",
    "SpawnError",
    "SidecarError",
    "NotReadyError",
    "ProcMgrTimeoutError",
    "OutputEndedError",
    "error_from_rpc",
]


class ProcMgrError(Exception):
    """Base class of every procmgr error.

    ``code`` is the JSON-RPC error code when the error came from the sidecar
    (else None), ``data`` the error's ``data`` member, and ``tag`` the tag it
    concerns when one applies.  ``reason`` is the stable word the sidecar
    gives every error (``data.reason``, e.g. "not_captured"; see
    docs/protocol.md "Errors"): branch on it, never on the message.
    """

    def __init__(
        self,
        message: str,
        *,
        code: Optional[int] = None,
        data: Any = None,
        tag: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.data = data
        if tag is None and isinstance(data, dict) and isinstance(data.get("tag"), str):
            tag = data["tag"]
        self.tag = tag

    @property
    def reason(self) -> Optional[str]:
        """``data.reason``: one stable snake_case word per case, or None when
        absent (an error of the client's own, or an older sidecar)."""
        data = self.data
        if isinstance(data, dict):
            reason = data.get("reason")
            if isinstance(reason, str):
                return reason
        return None


class TagInUseError(ProcMgrError):
    """``create`` was given a tag that is already in use (code -32001)."""


class NoSuchTagError(ProcMgrError):
    """The tag is unknown, or the Process's tag was released by ``stop`` (code -32002)."""


class SpawnError(ProcMgrError):
    """The tool could not be started; the message carries the OS reason (code -32003)."""


class SidecarError(ProcMgrError):
    """The sidecar died, stopped answering, is shutting down (-32004), or could not start."""


class NotReadyError(ProcMgrError):
    """``create(..., ready=...)``: the readiness condition did not hold in time,
    or the tool exited first (code -32005).  The tool was stopped (nothing of
    it remains) and the tag is free again.

    ``output_tail``: the end of the tool's captured output (last 20 lines, at
    most 4 KiB; ``""`` when it wrote nothing, None when nothing is captured);
    ``exit_status``: ``{"exit_code": int|None, "signal": str|None}`` when the
    tool exited before it was ready, else None; ``stopped``: True when a
    ``stop`` of the tag ended the wait; ``reason``: "timeout", "exited" or
    "stopped", why in one word.  The message says the same in words, with a
    hint at block buffering when nothing was written.
    """

    def _field(self, name: str) -> Any:
        return self.data.get(name) if isinstance(self.data, dict) else None

    @property
    def output_tail(self) -> Optional[str]:
        return self._field("output_tail")

    @property
    def exit_status(self) -> Optional[Dict[str, Any]]:
        return self._field("exit_status")

    @property
    def stopped(self) -> bool:
        return bool(self._field("stopped"))


class ProcMgrTimeoutError(ProcMgrError, TimeoutError):
    """A bounded client-side wait ran out: ``wait_for_output``, a read of
    ``Process.stdout``/``stderr`` with a ``timeout``, ``write_stdin_all``.

    The tool is left as it is.  ``output`` holds the last lines of output seen
    (``wait_for_output``), ``written`` how many bytes went in
    (``write_stdin_all``); each is None where it does not apply.
    """

    def __init__(self, message: str, *, tag: Optional[str] = None,
                 output: Optional[str] = None, written: Optional[int] = None) -> None:
        super().__init__(message, tag=tag)
        self.output = output
        self.written = written


class OutputEndedError(ProcMgrError, EOFError):
    """``wait_for_output``: the stream ended before the pattern showed up, and
    no restart will bring the tool back (it exited, became fatal, or was
    stopped).  ``returncode`` is the tool's last known status and ``output``
    the last lines of output seen."""

    def __init__(self, message: str, *, tag: Optional[str] = None,
                 returncode: Optional[int] = None, output: Optional[str] = None) -> None:
        super().__init__(message, tag=tag)
        self.returncode = returncode
        self.output = output


_BY_CODE = {
    -32001: TagInUseError,
    -32002: NoSuchTagError,
    -32003: SpawnError,
    -32004: SidecarError,
    -32005: NotReadyError,
}


def error_from_rpc(error: Any, method: str) -> ProcMgrError:
    """Build the exception for a JSON-RPC ``error`` object of a reply to ``method``."""
    if not isinstance(error, dict):
        return ProcMgrError("%s: malformed error from sidecar: %r" % (method, error))
    code = error.get("code")
    message = error.get("message")
    if not isinstance(message, str):
        message = repr(message)
    cls = _BY_CODE.get(code, ProcMgrError) if isinstance(code, int) else ProcMgrError
    return cls(message, code=code if isinstance(code, int) else None, data=error.get("data"))
