"""The sidecar process and the JSON-RPC 2.0 connection to it.

One ``Sidecar`` owns one ``procmgr`` process: it spawns it, writes requests to
its stdin (one JSON object per line), and runs two daemon threads:

* the reader matches replies to pending calls by id and hands every
  notification (``state`` and ``exited``) to ``on_notification`` -- the
  manager's _events.py, which only updates caches there;
* the dispatcher runs what that handler queued with ``dispatch`` (the user's
  on_exit and on_state callbacks), so a slow callback never delays a reply.

Every call waits a bounded time.  When the sidecar dies (EOF on its stdout, or
the process is gone) every pending call and every later call raises
SidecarError at once, naming the sidecar's log file.

This module knows nothing of tools: see _session.py for who starts a Sidecar
and _manager.py for the API.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import queue
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from ._errors import ProcMgrError, SidecarError, error_from_rpc
from ._seconds import seconds

__all__ = ["Sidecar", "PROTOCOL_VERSION"]

logger = logging.getLogger("procmgr")

PROTOCOL_VERSION = 1

#: How long a call without a timeout of its own waits for its reply.
DEFAULT_CALL_TIMEOUT = 60.0
#: Added to the timeout a call carries (stop, wait, shutdown) to get the reply wait.
REPLY_MARGIN = 15.0
#: How long to wait for the sidecar to answer ``hello`` after spawning it.
START_TIMEOUT = 20.0
#: Notifications queued for the callback dispatcher before new ones are dropped.
DISPATCH_QUEUE_SIZE = 1024

# json.dumps(..., separators=...) builds a new encoder per call; this one is
# reused. allow_nan=False is a backstop: durations are checked before (_seconds.py).
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode

# Popen objects of sidecars inherited through fork(): kept referenced so their
# __del__ never runs (and never waits for a process that is not ours) in the child.
_fork_leftovers: List[Any] = []


class _Pending:
    """One call waiting for its reply.

    The wait is a lock taken at creation and released by the reader thread
    when the reply is in: cheaper than a threading.Event (a Condition with its
    own lock), which matters when many threads call at once.
    """

    __slots__ = ("_done", "result", "error", "method", "_answered")

    def __init__(self, method: str) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self._answered = False
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.method = method

    def answer(self) -> None:
        """Wake the caller; called once, by whoever settles the call."""
        if not self._answered:
            self._answered = True
            self._done.release()

    def wait(self, timeout: float) -> bool:
        return self._done.acquire(timeout=max(0.0, timeout))


def _dup_or_devnull(fd: int) -> int:
    """A close-on-exec copy of ``fd`` numbered 3 or more (the sidecar refuses 0 and 1).

    A host whose fd is closed hands over /dev/null instead.
    """
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    except OSError:
        null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        if null >= 3:
            return null
        try:
            return fcntl.fcntl(null, fcntl.F_DUPFD_CLOEXEC, 3)
        finally:
            os.close(null)


def _describe_status(rc: Optional[int]) -> str:
    if rc is None:
        return "closed its stdout"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = "signal %d" % -rc
        return "was killed by %s" % name
    return "exited with status %d" % rc


class Sidecar:
    """A running procmgr sidecar and the JSON-RPC connection to it."""

    def __init__(
        self,
        binary: str,
        *,
        stop_timeout: Optional[float] = None,
        log_level: Optional[str] = None,
        log_file: Optional[str] = None,
        on_notification: Optional[Callable[["Sidecar", str, Any], None]] = None,
    ) -> None:
        self.binary = binary
        self.owner_pid = os.getpid()
        self._on_notification = on_notification
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # pending table and the dead flag
        self._write_lock = threading.Lock()
        self._pending: Dict[int, _Pending] = {}
        self._given_up: set = set()  # ids whose caller stopped waiting (timeout, Ctrl-C)
        self._dead: Optional[str] = None  # reason, once the connection is gone
        self._closing = False
        self._abandoned = False
        self._dropped = 0
        self._queue: "queue.Queue[Optional[Callable[[], None]]]" = queue.Queue(
            DISPATCH_QUEUE_SIZE
        )
        self.hello: Dict[str, Any] = {}

        # The session's temporary directory: the sidecar claims it (--temp-dir)
        # and it goes when the session ends, however the host died -- the
        # sidecar removes it on its way out, its watchdog after a SIGKILL. Only
        # a log the user asked for (log_file) is kept.
        self.tmpdir = tempfile.mkdtemp(prefix="procmgr-")
        if log_file is not None:
            self.log_path = os.path.abspath(log_file)
        else:
            self.log_path = os.path.join(self.tmpdir, "sidecar.log")
        self.stderr_path = os.path.join(self.tmpdir, "sidecar.stderr")

        args = [binary, "--parent-pid", str(os.getpid())]
        out_fd = _dup_or_devnull(1)
        err_fd = _dup_or_devnull(2)
        args += ["--stdout-fd", str(out_fd), "--stderr-fd", str(err_fd)]
        args += ["--log-file", self.log_path, "--temp-dir", self.tmpdir, "--framing", "line"]
        if log_level is not None:
            args += ["--log-level", str(log_level)]
        if stop_timeout is not None:
            args += ["--stop-timeout", _seconds(stop_timeout)]
        try:
            # The sidecar's environment, kept so that creates send only how
            # the host's environment differs from it (see _params.py).
            self.environ = dict(os.environ)
            # (snapshot of os.environ's encoded mapping, host environ, delta):
            # see _params.host_environ.
            self.env_cache: Optional[tuple] = None
            with open(self.stderr_path, "wb") as stderr_file:
                self._popen = subprocess.Popen(
                    args,
                    env=self.environ,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr_file,
                    bufsize=0,
                    close_fds=True,
                    pass_fds=(out_fd, err_fd),
                    start_new_session=True,
                )
        except OSError as exc:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            raise SidecarError("cannot start procmgr sidecar %s: %s" % (binary, exc)) from exc
        finally:
            os.close(out_fd)
            os.close(err_fd)
        self.pid = self._popen.pid
        assert self._popen.stdin is not None and self._popen.stdout is not None
        self._wfd = self._popen.stdin.fileno()
        self._rfd = self._popen.stdout.fileno()
        os.set_blocking(self._wfd, False)
        logger.debug("started sidecar pid %d: %s", self.pid, " ".join(args))

        self._reader = threading.Thread(
            target=self._read_loop, name="procmgr-reader-%d" % self.pid, daemon=True
        )
        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, name="procmgr-dispatch-%d" % self.pid, daemon=True
        )
        self._reader.start()
        self._dispatcher.start()

        try:
            hello = self.call("hello", {}, timeout=START_TIMEOUT)
        except ProcMgrError as exc:
            self.kill()
            raise SidecarError("procmgr sidecar %s did not start: %s" % (binary, exc)) from exc
        if not isinstance(hello, dict) or hello.get("protocol") != PROTOCOL_VERSION:
            self.kill()
            raise SidecarError(
                "procmgr sidecar %s speaks protocol %r, this client speaks %d; log: %s"
                % (binary, hello.get("protocol") if isinstance(hello, dict) else hello,
                   PROTOCOL_VERSION, self.log_path)
            )
        self.hello = hello
        self.features = frozenset(str(f) for f in hello.get("features") or ())

    # -- calls -------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._dead is None

    def call(
        self,
        method: str,
        params: Dict[str, Any],
        timeout: Optional[float] = None,
        on_abandon: Optional[Callable[[], None]] = None,
    ) -> Any:
        """Send one request and wait (at most ``timeout`` seconds) for its reply.

        ``on_abandon`` runs when the request went out but its caller will not
        get the reply (KeyboardInterrupt or another BaseException while
        waiting, or the reply timeout): before that propagates, so the caller
        can undo what the request did or may still do.  It never runs for a
        request that was not sent, nor for one answered with an error.
        """
        if timeout is None:
            timeout = DEFAULT_CALL_TIMEOUT
        pending = _Pending(method)
        with self._lock:
            if self._dead is not None:
                raise SidecarError(self._dead)
            req_id = next(self._ids)
            self._pending[req_id] = pending
        deadline = time.monotonic() + timeout
        try:
            line = (
                _encode({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params}).encode("ascii")
                + b"\n"
            )
            interrupted = self._write(line, deadline)
        except SidecarError:
            with self._lock:
                self._pending.pop(req_id, None)
            raise
        except BaseException:
            # A KeyboardInterrupt that came before any byte went out (_write
            # re-raises it): nothing was sent, so there is nothing to undo
            # (on_abandon is not run: a create refused as "tag in use" must
            # not stop the tag's owner). One that lands just after _write
            # returned finds the request on its way: its reply will come and
            # is dropped quietly.
            self._give_up(req_id)
            raise
        try:
            if interrupted is not None:
                raise interrupted  # it came after the line went out: the request is sent
            answered = pending.wait(deadline - time.monotonic())
        except BaseException:  # KeyboardInterrupt while waiting: give the call up
            arrived = self._give_up(req_id)
            if arrived:
                pending.wait(1.0)  # the reader took it: let it finish filling it in
            # A reply that came in as we were interrupted is lost to the
            # caller too: a success must be undone as well (an error, such
            # as "tag in use", did nothing to undo).
            if on_abandon is not None and (not arrived or pending.error is None):
                on_abandon()
            raise
        if not answered:
            if not self._give_up(req_id):
                if on_abandon is not None:
                    on_abandon()
                raise SidecarError(
                    "procmgr sidecar (pid %d) did not answer %s within %.1f s; log: %s"
                    % (self.pid, method, timeout, self.log_path)
                )
            pending.wait(1.0)  # it arrived just now: let the reader finish filling it in
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _give_up(self, req_id: int) -> bool:
        """Stop waiting for ``req_id``; True if its reply had arrived after all."""
        with self._lock:
            if self._pending.pop(req_id, None) is None:
                return True
            self._given_up.add(req_id)
            return False

    def _write(self, data: bytes, deadline: float) -> Optional[BaseException]:
        """Write one whole message, or raise SidecarError.

        A KeyboardInterrupt after part of the line went out would leave half a
        message in the pipe and garble the next one, so the rest is written
        first and the interrupt returned, for the caller to raise once it has
        noted that the message was sent.
        """
        view = memoryview(data)
        interrupted: Optional[BaseException] = None
        with self._write_lock:
            while view:
                try:
                    if self._dead is not None:
                        raise SidecarError(self._dead)
                    try:
                        n = os.write(self._wfd, view)
                        view = view[n:]
                        continue
                    except BlockingIOError:
                        pass
                    except OSError as exc:  # EPIPE, EBADF: the sidecar is gone
                        self._wait_dead(1.0)
                        raise SidecarError(
                            self._dead
                            or "cannot write to procmgr sidecar (pid %d): %s; log: %s"
                            % (self.pid, exc, self.log_path)
                        ) from None
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise SidecarError(
                            "procmgr sidecar (pid %d) stopped reading its stdin; log: %s"
                            % (self.pid, self.log_path)
                        )
                    select.select([], [self._wfd], [], min(remaining, 0.5))
                except (KeyboardInterrupt, SystemExit) as exc:
                    if len(view) == len(data):
                        raise  # nothing written yet: just give up
                    interrupted = exc
        return interrupted

    def _wait_dead(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while self._dead is None and time.monotonic() < end:
            time.sleep(0.01)

    # -- reader and dispatcher threads -------------------------------------

    def _read_loop(self) -> None:
        rfd = self._rfd
        # Non-blocking reads, and poll only when there is nothing to read: a
        # reply that is already in the pipe (the usual case under load, or
        # right after the notification that preceded it) costs one read, not
        # a poll and a read with a GIL hand-off each.
        os.set_blocking(rfd, False)
        poller = select.poll()
        poller.register(rfd, select.POLLIN | select.POLLHUP | select.POLLERR)
        handle = self._handle_line
        parts: List[bytes] = []  # the start of a line longer than what one read got
        reason: Optional[str] = None
        try:
            while True:
                try:
                    chunk = os.read(rfd, 1 << 16)
                except BlockingIOError:
                    if not poller.poll(500):
                        # No output for a while: make sure the process still exists
                        # (a leaked write end elsewhere would hide EOF from us).
                        if self._popen.poll() is not None:
                            break
                    continue
                if not chunk:
                    break
                end = chunk.rfind(b"\n")
                if end < 0:
                    parts.append(chunk)
                    continue
                # Every complete line of this read, in order: a notification
                # is handled before the reply that follows it wakes its caller.
                if parts:
                    parts.append(chunk[:end])
                    data = b"".join(parts)
                    parts = []
                else:
                    data = chunk[:end]
                if end + 1 < len(chunk):
                    parts.append(chunk[end + 1 :])
                for line in data.split(b"\n"):
                    handle(line)
        except Exception as exc:  # pragma: no cover - defensive
            reason = "reading from it failed: %r" % (exc,)
            logger.exception("procmgr reader thread failed")
        self._die(reason)
        # Nobody reads the pipe after us; an abandoned sidecar (see abandon())
        # that exited cleanly leaves no log worth keeping.
        try:
            if self._popen.stdout is not None:
                self._popen.stdout.close()
        except OSError:
            pass
        if self._abandoned and self._popen.returncode == 0:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _handle_line(self, line: bytes) -> None:
        line = line.strip()
        if not line:
            return
        try:
            msg = json.loads(line.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            logger.error("procmgr sidecar wrote a line that is not JSON: %r", line[:200])
            return
        if not isinstance(msg, dict):
            logger.error("procmgr sidecar wrote a non-object message: %r", line[:200])
            return
        if "method" in msg and msg.get("id") is None:
            self._notify(msg.get("method"), msg.get("params"))
            return
        req_id = msg.get("id")
        with self._lock:
            pending = self._pending.pop(req_id, None) if isinstance(req_id, int) else None
            late = pending is None and req_id in self._given_up
            self._given_up.discard(req_id)
        if late:
            logger.info("procmgr: late reply to request %s, whose caller gave up: %r", req_id, line[:200])
            return
        if pending is None:
            logger.warning("procmgr sidecar sent a reply nobody waits for: %r", line[:200])
            return
        if "error" in msg and msg["error"] is not None:
            pending.error = error_from_rpc(msg["error"], pending.method)
        else:
            pending.result = msg.get("result")
        pending.answer()

    def _notify(self, method: Any, params: Any) -> None:
        handler = self._on_notification
        if handler is None:
            return
        try:
            handler(self, str(method), params)
        except Exception:
            logger.exception("procmgr: handling %r notification failed", method)

    def dispatch(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the dispatcher thread (dropped, with a warning, if the queue is full)."""
        try:
            self._queue.put_nowait(fn)
        except queue.Full:
            self._dropped += 1
            logger.warning(
                "procmgr: on_exit/on_state callbacks are too slow; dropped %d notification(s)",
                self._dropped,
            )

    def _dispatch_loop(self) -> None:
        while True:
            fn = self._queue.get()
            if fn is None:
                return
            try:
                fn()
            except Exception:
                logger.exception("procmgr: a queued notification handler raised")

    def _die(self, reason: Optional[str]) -> None:
        """The connection is gone: fail every pending call and refuse new ones."""
        rc = None
        try:
            rc = self._popen.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
        if self._closing:
            text = "procmgr sidecar (pid %d) was shut down" % self.pid
        else:
            text = "procmgr sidecar (pid %d) %s" % (self.pid, reason or _describe_status(rc))
            tail = self._stderr_tail()
            if tail:
                text += "; its stderr ends with: %s" % tail
        text += "; log: %s" % self.log_path
        if not self._closing:
            logger.error("%s", text)
        with self._lock:
            self._dead = text
            pending = list(self._pending.values())
            self._pending.clear()
        for p in pending:
            p.error = SidecarError(text)
            p.answer()
        # Our write end is useless now; closing it also tells a sidecar that
        # merely closed its stdout to stop every tool.
        self._close_stdin(lock_timeout=1.0)
        try:
            self._queue.put(None, timeout=5)
        except queue.Full:  # pragma: no cover
            pass

    def _stderr_tail(self) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 600))
                data = f.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""
        return " | ".join(data.splitlines()[-5:])

    # -- shutting down -----------------------------------------------------

    def shutdown(self, timeout: Optional[float], wait: float) -> int:
        """Ask the sidecar to stop every tool and exit; then release everything.

        Returns how many tools it stopped.  ``wait`` bounds the reply wait.
        """
        stopped = 0
        if self._dead is None:
            self._closing = True
            params: Dict[str, Any] = {}
            if timeout is not None:
                params["timeout"] = timeout
            try:
                result = self.call("shutdown", params, timeout=wait)
                if isinstance(result, dict) and isinstance(result.get("stopped"), int):
                    stopped = result["stopped"]
            except SidecarError as exc:
                logger.warning("procmgr: shutdown: %s", exc)
        self._close_stdin()
        try:
            self._popen.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            logger.error(
                "procmgr sidecar (pid %d) did not exit after shutdown; killing it; log: %s",
                self.pid, self.log_path,
            )
            self.kill()
        self._finish()
        if self._popen.returncode == 0:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        return stopped

    def kill(self) -> None:
        """SIGKILL the sidecar (its tools die with it through their parent-death signal)."""
        self._closing = True
        try:
            self._popen.kill()
        except OSError:
            pass
        try:
            self._popen.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            logger.error("procmgr sidecar (pid %d) survived SIGKILL", self.pid)
        self._close_stdin()
        self._finish()

    def abandon(self) -> None:
        """Close our end of the sidecar's stdin without waiting: it then stops every tool."""
        self._closing = True
        self._abandoned = True
        self._close_stdin(lock_timeout=1.0)

    def _close_stdin(self, lock_timeout: float = -1) -> None:
        if not self._write_lock.acquire(timeout=lock_timeout):
            return
        try:
            if self._popen.stdin is not None:
                self._popen.stdin.close()
        except OSError:
            pass
        finally:
            self._write_lock.release()

    def _finish(self) -> None:
        """After the process exited: let the threads end (the reader closes its pipe)."""
        me = threading.current_thread()
        if me is not self._reader:
            self._reader.join(timeout=5)
        if me is not self._dispatcher:
            self._dispatcher.join(timeout=5)

    def forget_after_fork(self) -> None:
        """In a forked child: drop our copies of the pipes, never touch the process."""
        self._dead = "this procmgr sidecar belongs to process %d" % self.owner_pid
        self._closing = True
        for f in (self._popen.stdin, self._popen.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        _fork_leftovers.append(self._popen)


def _seconds(value: float) -> str:
    """``--stop-timeout``'s argument: the checked seconds, without a needless ".0"."""
    f = seconds(value, "stop_timeout", sent=True)
    return repr(f) if not f.is_integer() else str(int(f))
