"""Reading a tool's captured output: read_output results and file-like streams.

An OutputStream is built on ``Process.read_output``, whose ``wait`` makes the
sidecar hold the reply until output arrives (a long poll), so it never loops
while a tool is quiet.  (Waiting for a matching line, which also follows the
tool's state, is the Process's own: _process.py.)
"""

from __future__ import annotations

import io
import logging
import threading
import time
from dataclasses import dataclass
from typing import Optional, Protocol, Union

from ._errors import ProcMgrTimeoutError
from ._seconds import optional_seconds

__all__ = ["OutputChunk", "OutputStream", "STREAMS"]

logger = logging.getLogger("procmgr")

STREAMS = ("stdout", "stderr")
#: One long poll waits at most this long; a longer wait is made of several.
POLL_SLICE = 30.0
#: Bytes asked for per read by the file-like streams.
READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class OutputChunk:
    """What one ``read_output`` returned.

    ``data``: the text (``str``) or, with ``encoding="bytes"``, the exact
    bytes.  ``offset``: where to read next (offsets count every byte the
    stream ever carried, across restarts).  ``overflow``: bytes between the
    offset asked for and ``data`` were lost (the ring wrapped).  ``eof``: the
    current run closed the stream and everything before was read (a restart
    reopens it).
    """

    data: Union[str, bytes]
    offset: int
    overflow: bool
    eof: bool


class Process(Protocol):
    """What an OutputStream reads through: a Process (_process.py, which
    imports this module, so it is described here rather than imported)."""

    tag: str

    def read_output(
        self, stream: str = "stdout", offset: Optional[int] = None, max_bytes: Optional[int] = None,
        wait: Optional[float] = None, encoding: str = "text",
    ) -> OutputChunk: ...


class OutputStream(io.TextIOBase):
    """A captured stream of a tool as a read-only text file: ``read()``,
    ``readline()``, ``readlines()`` and ``for line in stream``.

    Reads block (long-polling the sidecar, never spinning) until there is
    enough text or the stream reaches EOF, which comes when the tool's run
    closed the stream (usually: it exited) -- iteration then ends.  Like a
    file that grows, a later read continues if a restart brought more output.

    ``timeout`` (seconds, default None: no limit) bounds how long one read may
    block; past it ProcMgrTimeoutError is raised (what was read stays
    buffered).  ``offset`` is the byte offset of the next byte to fetch from
    the sidecar; ``overflow`` turns True once output was lost because this
    reader fell further behind than the ring holds.

    Output is read from the oldest byte the sidecar still keeps.  It is text:
    UTF-8, invalid bytes replaced by U+FFFD; use ``Process.read_output(...,
    encoding="bytes")`` for the exact bytes.
    """

    def __init__(self, process: "Process", stream: str, timeout: Optional[float] = None) -> None:
        super().__init__()
        if stream not in STREAMS:
            raise ValueError("stream must be 'stdout' or 'stderr', not %r" % (stream,))
        self._process = process
        self._stream = stream
        self._lock = threading.RLock()
        self._buf = ""
        self._pos = 0  # consumed characters of _buf
        self.offset: Optional[int] = None
        self.overflow = False
        self.timeout = timeout

    @property
    def timeout(self) -> Optional[float]:
        """Seconds one read may block (None: no limit; 0: look once)."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: Optional[float]) -> None:
        self._timeout = optional_seconds(value, "timeout")

    # -- io.TextIOBase ---------------------------------------------------------

    @property
    def name(self) -> str:
        return "<%s of %s>" % (self._stream, self._process.tag)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "replace"

    def readable(self) -> bool:
        return True

    def read(self, size: Optional[int] = -1) -> str:
        """Up to ``size`` characters (all of them until EOF when ``size`` is None or negative)."""
        with self._lock:
            self._check_open()
            deadline = self._deadline()
            if size is None or size < 0:
                while self._fill(deadline):
                    pass
                return self._take(len(self._buf) - self._pos)
            while len(self._buf) - self._pos < size and self._fill(deadline):
                pass
            return self._take(min(size, len(self._buf) - self._pos))

    def readline(self, size: Optional[int] = -1) -> str:  # type: ignore[override]
        """The next line, with its newline; "" at EOF (the last line may lack a newline)."""
        with self._lock:
            self._check_open()
            deadline = self._deadline()
            limit = -1 if size is None else size
            while True:
                nl = self._buf.find("\n", self._pos)
                if nl >= 0:
                    end = nl + 1
                    break
                if 0 <= limit <= len(self._buf) - self._pos:
                    end = len(self._buf)
                    break
                if not self._fill(deadline):
                    end = len(self._buf)
                    break
            n = end - self._pos
            if limit >= 0:
                n = min(n, limit)
            return self._take(n)

    def read_available(self) -> str:
        """Whatever text is there now, without waiting ("" if none)."""
        with self._lock:
            self._check_open()
            self._fill(None, wait=False)
            return self._take(len(self._buf) - self._pos)

    def __repr__(self) -> str:
        return "<procmgr.OutputStream %s of %r offset=%s>" % (self._stream, self._process.tag, self.offset)

    # -- internals -------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed OutputStream")

    def _deadline(self) -> Optional[float]:
        t = self.timeout
        return None if t is None else time.monotonic() + t

    def _take(self, n: int) -> str:
        out = self._buf[self._pos : self._pos + n]
        self._pos += n
        if self._pos > 65536 and self._pos * 2 > len(self._buf):
            self._buf = self._buf[self._pos :]
            self._pos = 0
        return out

    def _fill(self, deadline: Optional[float], wait: bool = True) -> bool:
        """Fetch more text; False at EOF (nothing more until a restart)."""
        looked = False  # a timeout of 0 still looks once
        while True:
            if not wait:
                slice_ = 0.0
            elif deadline is None:
                slice_ = POLL_SLICE
            else:
                slice_ = max(0.0, min(POLL_SLICE, deadline - time.monotonic()))
                if slice_ <= 0 and looked:
                    raise ProcMgrTimeoutError(
                        "no more %s from %r within %s s" % (self._stream, self._process.tag, self.timeout),
                        tag=self._process.tag,
                    )
            looked = True
            chunk = self._process.read_output(
                self._stream, offset=self.offset, max_bytes=READ_CHUNK, wait=slice_
            )
            if chunk.overflow and not self.overflow:
                logger.warning(
                    "procmgr: %s of %r: output was lost before offset %d (the reader fell behind the ring)",
                    self._stream, self._process.tag, chunk.offset - len(chunk.data),
                )
            self.overflow = self.overflow or chunk.overflow
            self.offset = chunk.offset
            if chunk.data:
                self._buf += chunk.data  # type: ignore[operator]
                return True
            if chunk.eof or not wait:
                return False
