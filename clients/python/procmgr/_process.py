"""Process: one tool started through a ProcessManager, and everything done to it.

A Process talks to its manager's session (the sidecar connection) itself; it
checks with the registry that it still holds its tag before every call, and
follows the state events for its waits.  Errors are told apart by their
``reason`` (docs/protocol.md "Errors"), never by their message.
"""

from __future__ import annotations

import base64
import builtins
import collections
import re
import signal as _signal
import subprocess
import time
from typing import Any, Deque, Dict, List, Optional, Protocol, Union

from ._errors import NoSuchTagError, OutputEndedError, ProcMgrError, ProcMgrTimeoutError
from ._events import Events
from ._info import ProcessInfo, signal_number
from ._options import Restart
from ._output import POLL_SLICE, STREAMS, OutputChunk, OutputStream
from ._registry import Registry
from ._seconds import MAX_SECONDS, seconds
from ._session import Session
from . import _stats
from ._transport import REPLY_MARGIN

__all__ = ["Process"]

#: A wait() without timeout asks the sidecar in slices of this many seconds.
WAIT_SLICE = 30.0
#: The most one write_stdin request carries (the rest is left for the next one).
STDIN_CHUNK = 1 << 20
#: write_stdin_all never sends less than this per request (a pipe holds 64 KiB).
STDIN_MIN_CHUNK = 64 << 10
#: The most one read_output reply may carry.
MAX_READ_BYTES = 4 << 20
#: wait_for_output: a line longer than this is searched (and then dropped) without waiting for its end.
MAX_LINE = 1 << 20
#: Lines of context kept for the message of a failed wait_for_output.
CONTEXT_LINES = 5


class _Owner(Protocol):
    """What a Process needs of its manager, procmgr.ProcessManager (_manager.py
    imports this module, so it is described here rather than imported)."""

    _session: Session
    _registry: Registry
    _events: Events


class Process:
    """One tool started through a ProcessManager (CASA's process "container").

    ``tag`` and ``argv`` never change; ``pid`` is the current run's (it
    changes when a restart policy starts the tool again: the Process follows
    its tag from ``create`` until ``stop``).  Methods ask the sidecar for the
    current state; once ``stop()`` released the tag (or the manager shut down),
    they raise NoSuchTagError instead of acting on whatever now has that tag.
    ``returncode`` still gives the last known status then.
    """

    # ``manager`` is a procmgr.ProcessManager (the annotation names it for
    # help()); what is used of it is _Owner.
    def __init__(self, manager: "ProcessManager", info: ProcessInfo) -> None:  # noqa: F821
        owner: _Owner = manager
        self._manager = owner  # a Process in use keeps its manager, hence its sidecar, alive
        self._session: Session = manager._session
        self._registry: Registry = manager._registry
        self._events: Events = manager._events
        self._generation = self._session.generation  # which sidecar of the manager started it
        self._info = info
        self._released = False
        self._restart: Optional[Restart] = None  # the policy, when this client created it
        self._stdin_closed_pid: Optional[int] = None  # the run whose stdin close_stdin closed
        self._streams: Dict[str, OutputStream] = {}
        self.tag: str = info.tag
        self.argv: List[str] = builtins.list(info.argv)

    @property
    def pid(self) -> int:
        """The pid of the tool's current (or last) run, as last seen.

        A restart changes it; ``info().pid`` asks the sidecar.
        """
        return self._info.pid

    # -- state ---------------------------------------------------------------

    @property
    def returncode(self) -> Optional[int]:
        """None while the tool runs; its exit status, or -N if signal N killed it.

        Never raises: when the sidecar cannot be asked (the tag was released,
        the sidecar is gone, a forked child) it is the last known status.
        """
        rc = self._info.returncode
        if rc is not None or self._released:
            return rc
        try:
            return self._refresh().returncode
        except ProcMgrError:
            return self._info.returncode

    def is_alive(self) -> bool:
        """True if the tool's main process exists now (False after a crash)."""
        return self._refresh().alive

    def info(self) -> ProcessInfo:
        """A fresh snapshot of the tool from the sidecar (``state`` may be "fatal")."""
        return self._refresh()

    @property
    def restarts(self) -> int:
        """How many runs the restart policy started (0 without one).

        Asks the sidecar; once that is impossible (the tag was released) it is
        the last known count.
        """
        if not self._released:
            try:
                return self._refresh().restarts
            except ProcMgrError:
                pass
        return self._info.restarts

    def stats(self) -> _stats.ProcessStats:
        """What the tool's whole tree costs now (CPU, memory, processes): see ProcessStats."""
        return _stats.ProcessStats.from_json(self._call("stats", {"tag": self.tag}))

    def _repr_html_(self) -> str:
        if self._released:
            return _stats.plain_html(repr(self))
        try:
            info = self.info()
            stats = self.stats()
        except ProcMgrError:
            return _stats.plain_html(repr(self))
        return _stats.row_html(info, stats)

    # -- captured output -----------------------------------------------------

    def read_output(
        self,
        stream: str = "stdout",
        offset: Optional[int] = None,
        max_bytes: Optional[int] = None,
        wait: Optional[float] = None,
        encoding: str = "text",
    ) -> OutputChunk:
        """Read captured output (``create(..., output=output_option.PIPE)``).

        ``stream``: "stdout" or "stderr".  ``offset``: the byte offset to read
        from (offsets count every byte the stream ever carried, across
        restarts); default: the oldest byte the sidecar still keeps.
        ``max_bytes``: at most this many bytes (default 1 MiB, at most 4 MiB).
        ``wait``: when nothing lies beyond ``offset`` yet, wait up to this many
        seconds for output or EOF (the sidecar holds its reply: no polling).
        ``encoding``: "text" (str: UTF-8, invalid bytes replaced by U+FFFD,
        never a character split across reads) or "bytes" (the exact bytes;
        "base64" is accepted as a synonym).

        Returns an OutputChunk(data, offset, overflow, eof); pass its
        ``offset`` to the next call.  Output stays readable after the tool
        exited, until ``stop()`` releases the tag.
        """
        if stream not in STREAMS:
            raise ValueError("stream must be 'stdout' or 'stderr', not %r" % (stream,))
        if encoding not in ("text", "bytes", "base64"):
            raise ValueError("encoding must be 'text' or 'bytes', not %r" % (encoding,))
        params: Dict[str, Any] = {"tag": self.tag, "stream": stream}
        if offset is not None:
            if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
                raise ValueError("offset must be a non-negative int, not %r" % (offset,))
            params["offset"] = offset
        if max_bytes is not None:
            if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
                raise ValueError("max_bytes must be a positive int, not %r" % (max_bytes,))
            params["max_bytes"] = min(max_bytes, MAX_READ_BYTES)
        if wait is not None:
            # A wait longer than the protocol's limit is the same as the limit.
            params["wait"] = min(seconds(wait, "wait"), MAX_SECONDS)
        if encoding != "text":
            params["encoding"] = "base64"
        try:
            result = self._call("read_output", params, (wait or 0.0) + REPLY_MARGIN)
        except ProcMgrError as exc:
            if exc.reason == "not_captured":
                raise ProcMgrError(
                    "%s of %r is not captured: create it with output=output_option.PIPE (%s)"
                    % (stream, self.tag, exc.message),
                    code=exc.code, data=exc.data, tag=self.tag,
                ) from None
            raise
        if not isinstance(result, dict):
            raise ProcMgrError("read_output: malformed reply %r" % (result,), tag=self.tag)
        data = result.get("data") or ""
        if encoding != "text":
            data = base64.b64decode(data)
        return OutputChunk(
            data=data,
            offset=int(result.get("offset") or 0),
            overflow=bool(result.get("overflow")),
            eof=bool(result.get("eof")),
        )

    @property
    def stdout(self) -> OutputStream:
        """The captured stdout as a read-only, line-iterable text file (see OutputStream).

        The same object every time: its position is shared by its users.
        """
        return self._stream("stdout")

    @property
    def stderr(self) -> OutputStream:
        """The captured stderr as a read-only, line-iterable text file (see OutputStream)."""
        return self._stream("stderr")

    def _stream(self, name: str) -> OutputStream:
        s = self._streams.get(name)
        if s is None:
            s = self._streams.setdefault(name, OutputStream(self, name))
        return s

    def wait_for_output(
        self,
        pattern: Union[str, "re.Pattern[str]"],
        timeout: Optional[float] = 10.0,
        *,
        stream: str = "stdout",
        offset: Optional[int] = None,
    ) -> "re.Match[str]":
        """Wait until a line of captured output matches ``pattern`` and return the match.

        Each line (without its newline) is searched with ``re.search``, from
        ``offset`` (default: the oldest byte still kept, so a line printed
        before this call counts too; ``offset=p.output_offset()`` looks only
        at what comes next).  Waiting long-polls the sidecar.

        Raises ProcMgrTimeoutError (a TimeoutError) when ``timeout`` seconds
        pass first (None: no limit), and OutputEndedError (an EOFError) when
        the stream ends and nothing will bring more: the tool exited and its
        restart policy (if any) will not restart it, it became fatal, or it
        was stopped.  A tool that is restarting is waited for.  Both errors
        carry the last lines seen.  The tool is left as it is.
        """
        if timeout is not None:
            seconds(timeout, "timeout")
        self._registry.check(self)
        return _wait_for_output(self, pattern, timeout, stream, offset)

    def output_offset(self, stream: str = "stdout") -> int:
        """The offset just past the newest byte of a captured stream (what it carried so far)."""
        return self.read_output(stream, 1 << 62, None, None, "bytes").offset

    # -- stdin ---------------------------------------------------------------

    def write_stdin(self, data: Union[str, bytes, bytearray, memoryview], eof: bool = False) -> int:
        """Write to the tool's stdin pipe (``create(..., stdin=output_option.PIPE)``).

        ``data``: str (sent as UTF-8) or bytes.  Returns how many bytes went
        in, which can be fewer than given: the sidecar waits at most 10 ms for
        room in the pipe, so a tool that does not read never blocks anyone
        (send the rest later, or use ``write_stdin_all``).  With ``eof`` the
        pipe is closed afterwards -- only if all of ``data`` went in, so no
        byte is dropped silently.
        """
        raw = _stdin_bytes(data)
        piece = raw[:STDIN_CHUNK]
        params: Dict[str, Any] = {"tag": self.tag}
        if piece:
            if isinstance(data, str) and len(piece) == len(raw):
                params["data"] = data
            else:
                params["data_base64"] = base64.b64encode(piece).decode("ascii")
        if eof and not piece:
            params["eof"] = True
        written = self._write(params)
        if eof and piece and written == len(raw):
            self._write({"tag": self.tag, "eof": True})
        return written

    def write_stdin_all(
        self,
        data: Union[str, bytes, bytearray, memoryview],
        timeout: Optional[float] = 10.0,
        eof: bool = False,
    ) -> int:
        """Write all of ``data`` to the tool's stdin, as fast as the tool reads it.

        Returns the number of bytes written (all of them).  Raises
        ProcMgrTimeoutError, whose ``written`` says how much went in, if that
        takes longer than ``timeout`` seconds (None: no limit).  With ``eof``
        the pipe is closed once everything went in.
        """
        raw = _stdin_bytes(data)
        if timeout is not None:
            seconds(timeout, "timeout")
        deadline = None if timeout is None else time.monotonic() + timeout
        view = memoryview(raw)
        done = 0
        pause = 0.0
        chunk = STDIN_CHUNK
        while done < len(raw):
            piece = view[done : done + chunk]
            n = self.write_stdin(piece, False)
            done += n
            if done >= len(raw):
                break
            # Send about what the tool can take: a slow reader is not sent a
            # megabyte per request only to accept a few kilobytes of it.
            if n < len(piece):
                chunk = max(STDIN_MIN_CHUNK, 2 * n)
            else:
                chunk = min(STDIN_CHUNK, 2 * chunk)
            # The pipe is full (the sidecar already waited 10 ms for room):
            # give the tool a moment more to read, up to 50 ms.
            pause = 0.0 if n else min(0.05, pause + 0.01)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProcMgrTimeoutError(
                        "%r read only %d of %d bytes of its stdin within %s s"
                        % (self.tag, done, len(raw), timeout),
                        tag=self.tag,
                        written=done,
                    )
                pause = min(pause, left)
            if pause:
                time.sleep(pause)
        if eof:
            self.close_stdin()
        return done

    def close_stdin(self) -> None:
        """Close the tool's stdin pipe: the tool reads end-of-file.  Idempotent.

        Every run of a restarted tool gets a pipe of its own, so this is
        always sent.  The sidecar's answer that it was closed already is
        ``stdin_closed``; an older sidecar's carries no reason, so a refusal
        (-32602) of a run whose stdin this Process closed counts as one too.
        """
        pid = self._info.pid
        try:
            self._write({"tag": self.tag, "eof": True})
        except ProcMgrError as exc:
            if exc.reason == "stdin_closed" or (
                exc.reason is None and exc.code == -32602 and self._stdin_closed_pid == pid
            ):
                self._stdin_closed_pid = pid
                return  # closed already: closing is idempotent
            raise
        self._stdin_closed_pid = pid

    def _write(self, params: Dict[str, Any]) -> int:
        """One write_stdin request; how many bytes went in."""
        result = self._call("write_stdin", params)
        if not isinstance(result, dict) or not isinstance(result.get("written"), int):
            raise ProcMgrError("write_stdin: malformed reply %r" % (result,), tag=self.tag)
        return result["written"]

    # -- actions -------------------------------------------------------------

    def stop(self, timeout: Optional[float] = None) -> Optional[int]:
        """Stop the tool's whole process group and release its tag.

        Sends the stop signal (SIGTERM unless set otherwise), waits up to
        ``timeout`` seconds (default: the tool's stop_timeout), SIGKILLs the
        group, and returns once no process of the group remains.  Returns the
        tool's returncode.  Stopping a tool that already exited just releases
        the tag.
        """
        self._registry.check(self)
        params, reply_wait = self._registry.stop_request(self.tag, timeout)
        self._stopped(ProcessInfo.from_json(self._call("stop", params, reply_wait, checked=True)))
        return self._info.returncode

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Wait until the tool exits and return its returncode.

        Raises subprocess.TimeoutExpired if it is still running after
        ``timeout`` seconds (like subprocess.Popen.wait).  The tag stays in use.
        """
        self._registry.check(self)
        if timeout is not None:
            seconds(timeout, "timeout")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is None:
                slice_ = WAIT_SLICE
            else:
                slice_ = max(0.0, deadline - time.monotonic())
            result = self._session.call("wait", {"tag": self.tag, "timeout": slice_}, slice_ + REPLY_MARGIN)
            info = ProcessInfo.from_json(result)
            if not self._owns(info):
                self._released = True
                raise NoSuchTagError("tag %r now names another process" % self.tag, tag=self.tag)
            self._update(info)
            # The sidecar answers early only once the tool exited for good; at
            # the end of a slice, a tool waiting for a restart is not done.
            if not info.alive and info.returncode is not None:
                if info.state == "fatal" or not self._restart_pending(info):
                    return info.returncode
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.argv, timeout)  # type: ignore[arg-type]

    def send_signal(self, sig: Union[int, str, "_signal.Signals"]) -> None:
        """Send a signal (number, signal.Signals, or name like "SIGHUP") to the tool's process group."""
        self._registry.check(self)
        num = signal_number(int(sig) if isinstance(sig, _signal.Signals) else sig)
        if num is None or num <= 0:
            raise ValueError("unknown signal %r" % (sig,))
        self._session.call("signal", {"tag": self.tag, "signal": num})

    def terminate(self) -> None:
        """Send SIGTERM to the tool's process group (the tag stays in use)."""
        self.send_signal(_signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL to the tool's process group (the tag stays in use)."""
        self.send_signal(_signal.SIGKILL)

    # -- internals -----------------------------------------------------------

    def _call(self, method: str, params: Dict[str, Any], timeout: Optional[float] = None,
              checked: bool = False) -> Any:
        """Call ``method`` about this tool once it still holds its tag
        (``checked``: the caller made sure); a tag the sidecar no longer
        knows is released here too."""
        if not checked:
            self._registry.check(self)
        try:
            return self._session.call(method, params, timeout)
        except NoSuchTagError:
            self._registry.release(self)
            raise

    def _refresh(self) -> ProcessInfo:
        """Ask the sidecar for the tool's state now (and update the snapshot)."""
        self._registry.check(self)
        result = self._session.call("fetch", {"tag": self.tag})
        if result is None:
            self._registry.release(self)
            raise NoSuchTagError("tag %r is not in use" % self.tag, tag=self.tag)
        info = self._registry.snapshot(result)
        if not self._owns(info):
            self._released = True
            raise NoSuchTagError(
                "tag %r now names another process (pid %d, not %d)" % (self.tag, info.pid, self.pid),
                tag=self.tag,
            )
        self._registry.adopt(info, register=True)
        return self._info

    def _restart_pending(self, info: ProcessInfo) -> bool:
        """Will the restart policy start the exited tool ``info`` describes again?"""
        if info.state == "fatal" or info.alive:
            return False
        if self._restart is not None:
            return self._restart.wants_restart(info.returncode)
        # A tool this client did not create: trust the latest state event.
        return self._events.tag_state(self.tag) == "restarting"

    def _created_with(self, restart: Optional[Restart]) -> None:
        """This client created the tool, with the restart policy ``restart`` (None: none)."""
        self._restart = restart

    def _stopped(self, info: ProcessInfo) -> None:
        """The sidecar stopped the tag and answered ``info``: the tag is free."""
        if self._owns(info):
            self._update(info)
        self._registry.release(self)

    def _shut_down(self) -> None:
        """The manager's shutdown stopped the tool (the registry already let go of its tag)."""
        self._released = True

    def _update(self, info: ProcessInfo) -> None:
        # Snapshots can arrive out of order (a notification before a reply):
        # never go back from "exited" to "running", nor to an earlier run.
        cur = self._info
        if info.pid == cur.pid:
            if info.newer_than(cur):
                self._info = info
        elif info.later_run_of(cur):
            self._info = info

    def _owns(self, info: ProcessInfo) -> bool:
        """``info`` describes this tool: its current run, or a later run of it."""
        if info.tag != self.tag:
            return False
        if info.pid == self.pid or info.later_run_of(self._info):
            return True
        return self._registry.objects.get((info.tag, info.pid)) is self

    def __repr__(self) -> str:
        info = self._info
        if self._released:
            state = "released"
        else:
            state = info.state or "?"
        rc = info.returncode
        return "<procmgr.Process tag=%r pid=%d %s%s>" % (
            self.tag,
            self.pid,
            state,
            "" if rc is None else " returncode=%d" % rc,
        )


def _stdin_bytes(data: Any) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError("stdin data must be str or bytes, not %s" % type(data).__name__)


def _context(lines: Deque[str]) -> str:
    return "\n".join(lines)


def _wait_for_output(
    process: Process,
    pattern: Union[str, "re.Pattern[str]"],
    timeout: Optional[float],
    stream: str,
    offset: Optional[int],
) -> "re.Match[str]":
    """See Process.wait_for_output."""
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    if not isinstance(rx, re.Pattern):
        raise TypeError("pattern must be a str or re.Pattern, not %r" % (pattern,))
    if stream not in STREAMS:
        raise ValueError("stream must be 'stdout' or 'stderr', not %r" % (stream,))
    events = process._events
    tag = process.tag
    deadline = None if timeout is None else time.monotonic() + timeout
    cursor = offset
    pending = ""
    recent: Deque[str] = collections.deque(maxlen=CONTEXT_LINES)

    def remaining() -> float:
        if deadline is None:
            return POLL_SLICE
        return min(POLL_SLICE, deadline - time.monotonic())

    def search(lines: List[str]) -> Optional["re.Match[str]"]:
        for line in lines:
            if line.endswith("\r"):
                line = line[:-1]
            recent.append(line[:200])
            m = rx.search(line)
            if m is not None:
                return m
        return None

    def timed_out() -> ProcMgrTimeoutError:
        return ProcMgrTimeoutError(
            "no line of %s of %r matched %r within %s s; last lines: %r"
            % (stream, tag, rx.pattern, timeout, _context(recent)),
            tag=tag,
            output=_context(recent),
        )

    def ended(why: str, rc: Optional[int]) -> OutputEndedError:
        return OutputEndedError(
            "%s of %r ended before a line matched %r: %s; last lines: %r"
            % (stream, tag, rx.pattern, why, _context(recent)),
            tag=tag,
            returncode=rc,
            output=_context(recent),
        )

    eof_pid = None  # the run whose EOF we saw last
    looked = False  # a timeout of 0 still looks once
    while True:
        left = remaining()
        if left <= 0 and looked:
            raise timed_out()
        looked = True
        seq0 = events.tag_seq(tag)
        try:
            chunk = process.read_output(stream, offset=cursor, wait=max(0.0, left))
        except NoSuchTagError as exc:
            raise ended("the tool was stopped (its tag was released)", process._info.returncode) from exc
        cursor = chunk.offset
        text = pending + chunk.data  # type: ignore[operator]
        lines = text.split("\n")
        pending = lines.pop()
        if len(pending) > MAX_LINE:
            lines.append(pending)
            pending = ""
        m = search(lines)
        if m is not None:
            return m
        if not chunk.eof:
            eof_pid = None
            continue
        # End of the current run's stream: its last line may lack a newline.
        if pending:
            m = search([pending])
            pending = ""
            if m is not None:
                return m
        # Will a restart bring more output?
        try:
            info = process.info()
        except NoSuchTagError as exc:
            raise ended("the tool was stopped (its tag was released)", process._info.returncode) from exc
        if info.state == "fatal":
            raise ended("the tool is fatal (its restart policy gave up)", info.returncode)
        if info.alive:
            if eof_pid != info.pid:
                # A run that was just restarted may not have its stream
                # reopened yet (that takes microseconds): look once more.
                eof_pid = info.pid
                time.sleep(0.005)
                continue
            # This run closed its stream but still runs: wait for it to change.
        else:
            eof_pid = info.pid
            if not process._restart_pending(info):
                raise ended("the tool exited (returncode %s)" % info.returncode, info.returncode)
        # Wait for the next state change of the tool (a restart, an exit).
        left = remaining()
        if left <= 0:
            raise timed_out()
        events.wait(tag, seq0, left)
