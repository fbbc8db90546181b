"""ProcessManager and Process: CASA's procmgr API on top of the sidecar."""

from __future__ import annotations

import atexit
import base64
import builtins
import logging
import os
import re
import shlex
import signal as _signal
import subprocess
import threading
import time
import weakref
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from ._errors import NoSuchTagError, ProcMgrError, ProcMgrTimeoutError, SidecarError, SpawnError
from ._info import ProcessInfo, output_option, signal_number
from ._options import Ready, Restart, ready_params, restart_params
from ._seconds import MAX_SECONDS, seconds
from ._output import STREAMS, OutputChunk, OutputStream, wait_for_output
from . import _stats
from ._binary import find_binary
from ._transport import REPLY_MARGIN, Sidecar

__all__ = ["ProcessManager", "Process"]

logger = logging.getLogger("procmgr")

#: The stop timeout the sidecar uses when neither the tool nor the manager sets one.
SIDECAR_DEFAULT_STOP_TIMEOUT = 3.0
#: A wait() without timeout asks the sidecar in slices of this many seconds.
WAIT_SLICE = 30.0
#: The most one write_stdin request carries (the rest is left for the next one).
STDIN_CHUNK = 1 << 20
#: write_stdin_all never sends less than this per request (a pipe holds 64 KiB).
STDIN_MIN_CHUNK = 64 << 10
#: The largest ring the sidecar accepts for a captured stream.
MAX_CAPTURE_SIZE = 256 << 20
#: The most one read_output reply may carry.
MAX_READ_BYTES = 4 << 20

ExitCallback = Callable[["Process"], Any]
StateCallback = Callable[[str, ProcessInfo, int], Any]
PathLike = Union[str, "os.PathLike[str]"]

# Every manager, so that fork and exit handling can find them.
_managers: "weakref.WeakSet[ProcessManager]" = weakref.WeakSet()


class Process:
    """One tool started through a ProcessManager (CASA's process "container").

    ``tag`` and ``argv`` never change; ``pid`` is the current run's (it
    changes when a restart policy starts the tool again: the Process follows
    its tag from ``create`` until ``stop``).  Methods ask the sidecar for the
    current state; once ``stop()`` released the tag (or the manager shut down),
    they raise NoSuchTagError instead of acting on whatever now has that tag.
    ``returncode`` still gives the last known status then.
    """

    def __init__(self, manager: "ProcessManager", info: ProcessInfo) -> None:
        self._manager = manager
        self._generation = manager._generation  # which sidecar of the manager started it
        self._info = info
        self._released = False
        self._restart: Optional[Restart] = None  # the policy, when this client created it
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
            return self._manager._refresh(self).returncode
        except ProcMgrError:
            return self._info.returncode

    def is_alive(self) -> bool:
        """True if the tool's main process exists now (False after a crash)."""
        return self._manager._refresh(self).alive

    def info(self) -> ProcessInfo:
        """A fresh snapshot of the tool from the sidecar (``state`` may be "fatal")."""
        return self._manager._refresh(self)

    @property
    def restarts(self) -> int:
        """How many runs the restart policy started (0 without one).

        Asks the sidecar; once that is impossible (the tag was released) it is
        the last known count.
        """
        if not self._released:
            try:
                return self._manager._refresh(self).restarts
            except ProcMgrError:
                pass
        return self._info.restarts

    def stats(self) -> _stats.ProcessStats:
        """What the tool's whole tree costs now (CPU, memory, processes): see ProcessStats."""
        return _stats.process_stats(self)

    def _repr_html_(self) -> str:
        return _stats.process_html(self)

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
        return self._manager._read_output(self, stream, offset, max_bytes, wait, encoding)

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
            _check_seconds(timeout, "timeout")
        self._manager._check(self)
        return wait_for_output(self, pattern, timeout, stream, offset)

    def output_offset(self, stream: str = "stdout") -> int:
        """The offset just past the newest byte of a captured stream (what it carried so far)."""
        return self._manager._read_output(self, stream, 1 << 62, None, None, "bytes").offset

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
        return self._manager._write_stdin(self, data, eof)

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
        return self._manager._write_stdin_all(self, data, timeout, eof)

    def close_stdin(self) -> None:
        """Close the tool's stdin pipe: the tool reads end-of-file.  Idempotent."""
        self._manager._close_stdin(self)

    # -- actions -------------------------------------------------------------

    def stop(self, timeout: Optional[float] = None) -> Optional[int]:
        """Stop the tool's whole process group and release its tag.

        Sends the stop signal (SIGTERM unless set otherwise), waits up to
        ``timeout`` seconds (default: the tool's stop_timeout), SIGKILLs the
        group, and returns once no process of the group remains.  Returns the
        tool's returncode.  Stopping a tool that already exited just releases
        the tag.
        """
        return self._manager._stop(self, timeout)

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Wait until the tool exits and return its returncode.

        Raises subprocess.TimeoutExpired if it is still running after
        ``timeout`` seconds (like subprocess.Popen.wait).  The tag stays in use.
        """
        return self._manager._wait(self, timeout)

    def send_signal(self, sig: Union[int, str, "_signal.Signals"]) -> None:
        """Send a signal (number, signal.Signals, or name like "SIGHUP") to the tool's process group."""
        self._manager._signal(self, sig)

    def terminate(self) -> None:
        """Send SIGTERM to the tool's process group (the tag stays in use)."""
        self.send_signal(_signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL to the tool's process group (the tag stays in use)."""
        self.send_signal(_signal.SIGKILL)

    # -- internals -----------------------------------------------------------

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
        return self._manager._objects.get((info.tag, info.pid)) is self

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


class ProcessManager:
    """Starts, finds and stops tagged tools through one procmgr sidecar.

    ``binary``: the sidecar executable; default ``$PROCMGR_BIN``, else the
    one bundled in a platform wheel, else ``procmgr`` on PATH (_binary.py).  ``stop_timeout``: default seconds between the stop
    signal and SIGKILL for every tool (the sidecar's own default is 3 s).
    ``log_level``: the sidecar's log level (debug, info, warn, error).
    ``log_file``: append the sidecar's log to this file, which is kept; by
    default the log lives in the session's temporary directory, which is
    removed when the session ends (however the host ends).

    The sidecar starts when the manager is created.  Use it as a context
    manager, or call ``shutdown()``; managers still running when the
    interpreter exits are shut down by an atexit hook, and even a host killed
    with SIGKILL takes its tools with it (the sidecar notices and stops them).

    A manager belongs to the process that created it: after ``os.fork()`` the
    child gets ProcMgrError from it (the default ``procmgr`` object instead
    starts a fresh sidecar of the child's own).
    """

    def __init__(
        self,
        binary: Optional[PathLike] = None,
        *,
        stop_timeout: Optional[float] = None,
        log_level: Optional[str] = None,
        log_file: Optional[PathLike] = None,
        _lazy: bool = False,
    ) -> None:
        if stop_timeout is not None:
            _check_seconds(stop_timeout, "stop_timeout", sent=True)
        self._binary_arg = binary
        self._stop_timeout = stop_timeout
        self._log_level = log_level
        self._log_file = None if log_file is None else _str_path(log_file, "log_file")
        self._is_default = _lazy
        self._callbacks: List[ExitCallback] = []
        self._state_callbacks: List[StateCallback] = []
        self._reset()
        _managers.add(self)
        if not _lazy:
            self._connection()

    def _reset(self) -> None:
        """Fresh per-process state (also used in a forked child by the default manager)."""
        self._owner_pid = os.getpid()
        self._foreign_pid: Optional[int] = None
        self._start_lock = threading.Lock()
        self._reg_lock = threading.Lock()
        self._sidecar: Optional[Sidecar] = None
        self._closed = False
        # The Process of each tag in use, and every Process object still referenced.
        self._current: Dict[str, Process] = {}
        self._objects: "weakref.WeakValueDictionary[tuple, Process]" = (
            weakref.WeakValueDictionary()
        )
        self._tool_stop_timeouts: Dict[str, float] = {}
        self._reset_events()
        # Bumped for every new sidecar: a Process of an earlier one (before a
        # shutdown of the default manager, or inherited through fork) is dead.
        self._generation = getattr(self, "_generation", 0) + 1

    def _reset_events(self) -> None:
        """Fresh state-event bookkeeping (every sidecar numbers its events from 1)."""
        self._event_cond = threading.Condition()
        self._last_seq = 0
        self._missed = 0
        self._tag_seq: Dict[str, int] = {}  # seq of the latest state event of each tag
        self._tag_state: Dict[str, str] = {}  # and its state

    # -- the sidecar ---------------------------------------------------------------

    def _own_process(self) -> None:
        """Raise ProcMgrError in a forked child for a manager of the parent."""
        if os.getpid() != self._owner_pid:
            # fork() without our at-fork hook having run (should not happen).
            self._after_fork_in_child()
        if self._foreign_pid is not None:
            raise ProcMgrError(
                "this ProcessManager belongs to process %d and cannot be used after "
                "os.fork() (this is process %d); create a new ProcessManager here, or use "
                "the default `procmgr`, which starts its own sidecar in each process"
                % (self._foreign_pid, os.getpid())
            )

    def _connection(self) -> Sidecar:
        self._own_process()
        sc = self._sidecar
        if sc is not None:
            return sc
        with self._start_lock:
            if self._sidecar is None:
                if self._closed:
                    raise ProcMgrError("this ProcessManager was shut down")
                binary = find_binary(self._binary_arg)
                self._generation += 1
                self._reset_events()
                self._sidecar = Sidecar(
                    binary,
                    stop_timeout=self._stop_timeout,
                    log_level=self._log_level,
                    log_file=self._log_file,
                    on_notification=_notification_handler(self),
                )
            return self._sidecar

    def _call(self, method: str, params: Dict[str, Any], timeout: Optional[float] = None) -> Any:
        return self._connection().call(method, params, timeout)

    def _after_fork_in_child(self) -> None:
        sc = self._sidecar
        if sc is not None:
            sc.forget_after_fork()
        if self._is_default:
            self._reset()
        else:
            parent = self._owner_pid
            self._reset()
            self._foreign_pid = parent
            self._closed = True

    @property
    def pid(self) -> int:
        """The sidecar's pid (starts the default manager's sidecar)."""
        return self._connection().pid

    @property
    def log_path(self) -> str:
        """The sidecar's log file."""
        return self._connection().log_path

    @property
    def features(self) -> frozenset:
        """Optional features the sidecar announced in hello (e.g. "capture")."""
        return self._connection().features

    @property
    def sidecar_version(self) -> str:
        """The sidecar's version, from hello."""
        return str(self._connection().hello.get("version", ""))

    @property
    def session(self) -> str:
        """The session id every tool carries in PROCMGR_SESSION (from hello; "" if not sent)."""
        return str(self._connection().hello.get("session", ""))

    @property
    def last_event_seq(self) -> int:
        """The ``seq`` of the latest state event received from the current sidecar (0: none yet)."""
        return self._last_seq

    @property
    def missed_events(self) -> int:
        """How many state events the current sidecar sent that never arrived.

        Events are numbered 1, 2, 3... per sidecar; a gap (the sidecar drops
        notifications when the host does not read them fast enough) is
        counted here and logged as a warning.
        """
        return self._missed

    # -- the CASA API ----------------------------------------------------------

    def create(
        self,
        tag: str,
        argv: Union[str, Sequence[PathLike]],
        output: Union[output_option, PathLike] = output_option.DISCARD,
        *,
        cwd: Optional[PathLike] = None,
        env: Optional[Mapping[str, Optional[str]]] = None,
        stop_timeout: Optional[float] = None,
        clear_env: bool = False,
        stdin: Any = None,
        ready: Union[Ready, Dict[str, Any], None] = None,
        restart: Union[Restart, str, Dict[str, Any], None] = None,
        capture_size: Optional[int] = None,
        capture_file: Any = None,
        capture_file_max_bytes: Optional[int] = None,
        capture_file_backups: Optional[int] = None,
    ) -> Process:
        """Start a tool under ``tag`` and return its Process once it has been exec'd
        (and, with ``ready``, once it is ready).

        ``argv``: a list (argv[0] without a slash is looked up in PATH), or a
        str naming a single executable (no shell): ``"sleep 60"`` is refused
        with a hint to pass ``["sleep", "60"]``.  ``output``: an
        output_option, or a file path that receives both stdout and stderr
        (appended); ``output_option.PIPE`` captures stdout and stderr in the
        sidecar (see ``Process.read_output``); a str such as ``"PIPE"`` is
        refused (ValueError: pass the output_option; ``"./PIPE"`` names a
        file).  ``cwd``: default the host's current directory.  Relative
        paths (``output``, ``capture_file``, ``Ready.path``) are taken from
        the tool's cwd.  ``env``: extra variables merged over the host's
        *current* os.environ (a value of None removes a variable) -- unlike
        subprocess, where env replaces the environment; with ``clear_env``
        the tool gets only ``env`` (plus PROCMGR_TAG and PROCMGR_SESSION).
        ``stop_timeout``: seconds between the stop signal and SIGKILL for
        this tool.

        ``stdin``: None (/dev/null) or ``output_option.PIPE`` (fed by
        ``Process.write_stdin``).  ``ready``: ``Ready.output(regex)``,
        ``Ready.path(file)`` or ``Ready.tcp(port)`` (or the protocol's dict):
        returns only once it holds, else the tool is stopped and
        NotReadyError raised.  ``restart``: ``Restart(...)``, a policy name
        ("never", "on-failure", "always") or the protocol's dict.

        Capture options (need ``output=output_option.PIPE``), per stream:
        ``capture_size`` (ring bytes, default 1 MiB), ``capture_file`` (also
        append the output to a file: a path gets stdout, and stderr goes to
        the same path plus ".stderr"; or a pair ``(stdout_path,
        stderr_path)``, either None), rotated at ``capture_file_max_bytes``
        (default 10 MiB) keeping ``capture_file_backups`` old files (default 3).

        Raises TagInUseError if the tag is in use and SpawnError (with the OS
        reason) if the tool cannot start; CASA printed and returned None.
        Interrupted while it waits (KeyboardInterrupt during a readiness
        wait), ``create`` stops the tool and frees the tag before the
        interruption propagates: a retry with the same tag works.
        """
        if not isinstance(tag, str) or not tag:
            raise ValueError("tag must be a non-empty str, not %r" % (tag,))
        args = _argv_list(argv)
        if stop_timeout is not None:
            _check_seconds(stop_timeout, "stop_timeout", sent=True)
        sc = self._connection()
        params: Dict[str, Any] = {"tag": tag, "argv": args}
        capture = _capture_options(
            output, capture_size, capture_file, capture_file_max_bytes, capture_file_backups
        )
        params.update(_output_params(output, sc.features, capture))
        params["cwd"] = os.path.abspath(_str_path(cwd, "cwd")) if cwd is not None else os.getcwd()
        if stdin is not None and stdin is not output_option.DISCARD and stdin != "null":
            if stdin is output_option.PIPE or stdin == "pipe" or stdin is True:
                _require(sc.features, "stdin", "a stdin pipe (stdin=output_option.PIPE)")
                params["stdin"] = "pipe"
            else:
                raise ValueError("stdin must be None or output_option.PIPE, not %r" % (stdin,))
        reply_wait: Optional[float] = None
        ready_spec = None
        if ready is not None:
            ready_spec = ready_params(ready)
            _require(sc.features, "readiness", "readiness conditions (ready=)")
            params["ready"] = ready_spec.to_json()
            grace = stop_timeout if stop_timeout is not None else self._stop_grace(tag)
            reply_wait = ready_spec.wait_seconds + grace + REPLY_MARGIN
        restart_spec = None
        if restart is not None:
            restart_spec = restart_params(restart)
            _require(sc.features, "restart", "restart policies (restart=)")
            params["restart"] = restart_spec.to_json()
        delta: Dict[str, Optional[str]] = {}
        environ: Dict[str, str] = {}
        if not clear_env:
            environ, delta = _host_environ(sc)
        if env is not None:
            environ = dict(environ)
            for key, value in env.items():
                if not isinstance(key, str) or not key or "=" in key:
                    raise ValueError("bad environment variable name %r" % (key,))
                if value is None:
                    environ.pop(key, None)
                elif isinstance(value, str):
                    environ[key] = value
                else:
                    raise TypeError("environment value of %s must be str or None" % key)
        if clear_env:
            params["env"] = environ
            params["inherit_env"] = False
        else:
            # The sidecar inherited the host's environment as it was at spawn:
            # send only the difference (usually nothing), not all of it.
            if env is not None:
                delta = _environ_delta(sc.environ, environ)
            if delta:
                params["env"] = dict(delta)
        if stop_timeout is not None:
            params["stop_timeout"] = stop_timeout
        try:
            # Interrupted while the sidecar still creates (KeyboardInterrupt
            # during a readiness wait): stop the tool and free the tag first.
            result = sc.call(
                "create", params, reply_wait,
                on_abandon=lambda: self._abort_create(sc, tag, stop_timeout),
            )
        except SpawnError as exc:
            text = exc.message.lower()
            if (
                isinstance(argv, str)
                and len(argv.split()) > 1
                and argv in exc.message
                and ("not found" in text or "no such file" in text)
            ):
                raise SpawnError(
                    "%s; a str argv names one executable (no shell): pass a list, e.g. %r"
                    % (exc.message, _split_hint(argv)),
                    code=exc.code, data=exc.data, tag=exc.tag,
                ) from None
            raise
        info = ProcessInfo.from_json(result)
        if stop_timeout is not None:
            with self._reg_lock:
                self._tool_stop_timeouts[tag] = float(stop_timeout)
        proc = self._adopt(info, register=True)
        proc._restart = restart_spec
        return proc

    def _abort_create(self, sc: Sidecar, tag: str, stop_timeout: Optional[float]) -> None:
        """Stop ``tag``, whose create the caller gave up, waiting a bounded time.

        The sidecar ends a readiness wait at once when its tag is stopped (the
        abandoned create then answers -32005); whatever fails here is logged,
        never raised over the interruption that brought us here.
        """
        params: Dict[str, Any] = {"tag": tag}
        if stop_timeout is not None:
            params["timeout"] = stop_timeout
        grace = stop_timeout if stop_timeout is not None else self._stop_grace(tag)
        try:
            sc.call("stop", params, grace + REPLY_MARGIN)
        except NoSuchTagError:
            pass  # the create had failed, or finished and was stopped already
        except Exception as exc:
            logger.warning("procmgr: stopping %r after its create was interrupted: %s", tag, exc)

    def stop(self, tag: str, timeout: Optional[float] = None) -> Optional[int]:
        """Stop the tool of ``tag`` (as ``Process.stop``) and return its returncode.

        Raises NoSuchTagError if the tag is not in use.
        """
        if not isinstance(tag, str) or not tag:
            raise ValueError("tag must be a non-empty str, not %r" % (tag,))
        params: Dict[str, Any] = {"tag": tag}
        if timeout is not None:
            _check_seconds(timeout, "timeout", sent=True)
            params["timeout"] = timeout
        grace = timeout if timeout is not None else self._stop_grace(tag)
        try:
            result = self._call("stop", params, grace + REPLY_MARGIN)
        except NoSuchTagError:
            with self._reg_lock:
                cur = self._current.get(tag)
            if cur is not None:
                self._release(cur)  # whatever we knew of the tag is stale
            raise
        info = ProcessInfo.from_json(result)
        with self._reg_lock:
            cur = self._current.get(tag)
        if cur is not None:
            if cur._owns(info):
                cur._update(info)
            self._release(cur)
        return info.returncode

    def running(self, tag: str) -> bool:
        """True while ``tag`` is in use: from create until stop, even after the tool crashed."""
        return bool(self._call("running", {"tag": tag}))

    def fetch(self, tag: str) -> Optional[Process]:
        """The Process of ``tag``, or None if the tag is not in use."""
        result = self._call("fetch", {"tag": tag})
        if result is None:
            with self._reg_lock:
                old = self._current.pop(tag, None)
            if old is not None:
                old._released = True
            return None
        return self._adopt(self._snapshot(result), register=True)

    def list(self) -> List[Process]:
        """Every tool whose tag is in use, sorted by tag."""
        result = self._call("list", {})
        return [self._adopt(self._snapshot(item), register=True) for item in result or ()]

    def table(self) -> _stats.ProcessTable:
        """Every tool in use with what it costs, in one call: rows of (tag, pid,
        state, uptime, restarts, processes, cpu_seconds, rss); ``print()`` it for
        an aligned table, or show it in Jupyter."""
        return _stats.table(self)

    def _repr_html_(self) -> str:
        return _stats.manager_html(self)

    def __getitem__(self, tag: str) -> Optional[Process]:
        """``manager[tag]`` is ``manager.fetch(tag)`` (None for an unknown tag, as in CASA)."""
        return self.fetch(tag)

    def __contains__(self, tag: object) -> bool:
        return isinstance(tag, str) and self.running(tag)

    def on_exit(self, callback: ExitCallback) -> ExitCallback:
        """Call ``callback(process)`` whenever a tool exits, whoever caused it.

        Callbacks run on a dispatcher thread, one at a time; an exception is
        logged (logger "procmgr") and does not stop the others.  Returns the
        callback, so this also works as a decorator.
        """
        if not callable(callback):
            raise TypeError("callback must be callable")
        self._callbacks.append(callback)
        return callback

    def remove_on_exit(self, callback: ExitCallback) -> None:
        """Undo on_exit(callback)."""
        try:
            self._callbacks.remove(callback)
        except ValueError:
            pass

    def on_state(self, callback: StateCallback) -> StateCallback:
        """Call ``callback(state, info, seq)`` on every state change of every tool.

        ``state``: "started", "ready", "exited", "restarting", "fatal" or
        "stopped"; ``info``: the ProcessInfo snapshot the sidecar sent with it
        (``info.tag``, ``info.pid`` of the run concerned, ``info.restarts``...);
        ``seq``: the event's number, 1, 2, 3... per sidecar.  Callbacks run on
        the dispatcher thread in ``seq`` order, one at a time (an exception is
        logged); they may call the manager.  A gap in ``seq`` is logged as a
        warning and counted in ``missed_events``.  Returns the callback, so
        this also works as a decorator.
        """
        if not callable(callback):
            raise TypeError("callback must be callable")
        self._state_callbacks.append(callback)
        return callback

    def remove_on_state(self, callback: StateCallback) -> None:
        """Undo on_state(callback)."""
        try:
            self._state_callbacks.remove(callback)
        except ValueError:
            pass

    def shutdown(self, timeout: Optional[float] = None) -> int:
        """Stop every tool (in parallel) and the sidecar; return how many tools were stopped.

        Idempotent.  Afterwards this manager refuses calls -- except the
        default ``procmgr``, which starts a new sidecar on its next use.
        In a forked child it does nothing (the parent's sidecar is not ours).
        """
        if timeout is not None:
            _check_seconds(timeout, "timeout", sent=True)
        if os.getpid() != self._owner_pid or self._foreign_pid is not None:
            return 0
        with self._start_lock:
            sc = self._sidecar
            self._sidecar = None
            if not self._is_default:
                self._closed = True
        if sc is None:
            return 0
        with self._reg_lock:
            released = builtins.list(self._current.values())
            self._current.clear()
            grace = max(
                [SIDECAR_DEFAULT_STOP_TIMEOUT, self._stop_timeout or 0.0]
                + builtins.list(self._tool_stop_timeouts.values())
            )
            self._tool_stop_timeouts.clear()
        wait = (timeout if timeout is not None else grace) + REPLY_MARGIN
        try:
            return sc.shutdown(timeout, wait)
        finally:
            for p in released:
                p._released = True

    def close(self) -> None:
        """Same as shutdown()."""
        self.shutdown()

    def __enter__(self) -> "ProcessManager":
        self._connection()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __del__(self) -> None:
        # Never wait here: closing the sidecar's stdin makes it stop every tool.
        try:
            sc = self._sidecar
            if sc is not None and os.getpid() == self._owner_pid and self._foreign_pid is None:
                sc.abandon()
        except Exception:
            pass

    def __repr__(self) -> str:
        kind = "default " if self._is_default else ""
        if self._foreign_pid is not None:
            return "<procmgr.ProcessManager %sof process %d (unusable here)>" % (
                kind, self._foreign_pid)
        sc = self._sidecar
        if sc is None:
            state = "shut down" if self._closed else "not started"
            return "<procmgr.ProcessManager %s(%s)>" % (kind, state)
        return "<procmgr.ProcessManager %ssidecar pid=%d tools=%d log=%s>" % (
            kind,
            sc.pid,
            len(self._current),
            sc.log_path,
        )

    # -- Process operations ------------------------------------------------------

    def _adopt(self, info: ProcessInfo, register: bool) -> Process:
        """The one Process object for (tag, pid), updated with ``info``.

        A later run of the tool now using the tag (a restart) belongs to that
        tool's Process too.
        """
        with self._reg_lock:
            key = (info.tag, info.pid)
            cur = self._current.get(info.tag)
            if cur is not None and cur._info is info and not cur._released:
                return cur  # the snapshot it already has (see _snapshot): nothing to update
            if cur is not None and not cur._released and info.later_run_of(cur._info):
                cur._update(info)
                self._objects[key] = cur
                return cur
            proc = self._objects.get(key)
            if proc is None:
                proc = Process(self, info)
                self._objects[key] = proc
            else:
                proc._update(info)
            if register:
                old = self._current.get(info.tag)
                if old is not None and old is not proc:
                    old._released = True
                self._current[info.tag] = proc
                proc._released = False
        return proc

    def _snapshot(self, obj: Any) -> ProcessInfo:
        """ProcessInfo.from_json(obj), or the snapshot the tag's Process already
        holds when the sidecar sent exactly the same (a list() of tools that did
        not change since the last one costs a dict comparison per tool)."""
        if isinstance(obj, dict):
            tag = obj.get("tag")
            if type(tag) is str:
                cur = self._current.get(tag)
                if cur is not None:
                    info = cur._info
                    if info.raw == obj:
                        return info
        return ProcessInfo.from_json(obj)

    def _check(self, proc: Process) -> None:
        """Refuse to act on a Process whose tag was released or now names another tool."""
        if proc._manager is not self:  # pragma: no cover - defensive
            raise ProcMgrError("this Process belongs to another manager")
        self._own_process()
        if proc._generation != self._generation:
            proc._released = True
            raise NoSuchTagError(
                "tag %r of pid %d belonged to an earlier sidecar (shut down, or in the "
                "parent process before fork())" % (proc.tag, proc.pid),
                tag=proc.tag,
            )
        if proc._released:
            raise NoSuchTagError(
                "tag %r of pid %d was released (stopped)" % (proc.tag, proc.pid), tag=proc.tag
            )
        with self._reg_lock:
            cur = self._current.get(proc.tag)
        if cur is not None and cur is not proc:
            proc._released = True
            raise NoSuchTagError(
                "tag %r now names another process (pid %d, not %d)" % (proc.tag, cur.pid, proc.pid),
                tag=proc.tag,
            )

    def _release(self, proc: Process) -> None:
        with self._reg_lock:
            if self._current.get(proc.tag) is proc:
                del self._current[proc.tag]
                self._tool_stop_timeouts.pop(proc.tag, None)
            proc._released = True

    def _refresh(self, proc: Process) -> ProcessInfo:
        self._check(proc)
        result = self._call("fetch", {"tag": proc.tag})
        if result is None:
            self._release(proc)
            raise NoSuchTagError("tag %r is not in use" % proc.tag, tag=proc.tag)
        info = self._snapshot(result)
        if not proc._owns(info):
            proc._released = True
            raise NoSuchTagError(
                "tag %r now names another process (pid %d, not %d)" % (proc.tag, info.pid, proc.pid),
                tag=proc.tag,
            )
        self._adopt(info, register=True)
        return proc._info

    def _stop_grace(self, tag: str) -> float:
        with self._reg_lock:
            t = self._tool_stop_timeouts.get(tag)
        if t is None:
            t = self._stop_timeout if self._stop_timeout is not None else SIDECAR_DEFAULT_STOP_TIMEOUT
        return t

    def _stop(self, proc: Process, timeout: Optional[float]) -> Optional[int]:
        self._check(proc)
        params: Dict[str, Any] = {"tag": proc.tag}
        if timeout is not None:
            _check_seconds(timeout, "timeout", sent=True)
            params["timeout"] = timeout
        grace = timeout if timeout is not None else self._stop_grace(proc.tag)
        try:
            result = self._call("stop", params, grace + REPLY_MARGIN)
        except NoSuchTagError:
            self._release(proc)
            raise
        info = ProcessInfo.from_json(result)
        if proc._owns(info):
            proc._update(info)
        self._release(proc)
        return proc._info.returncode

    def _wait(self, proc: Process, timeout: Optional[float]) -> Optional[int]:
        self._check(proc)
        if timeout is not None:
            _check_seconds(timeout, "timeout")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is None:
                slice_ = WAIT_SLICE
            else:
                slice_ = max(0.0, deadline - time.monotonic())
            result = self._call("wait", {"tag": proc.tag, "timeout": slice_}, slice_ + REPLY_MARGIN)
            info = ProcessInfo.from_json(result)
            if not proc._owns(info):
                proc._released = True
                raise NoSuchTagError(
                    "tag %r now names another process" % proc.tag, tag=proc.tag
                )
            proc._update(info)
            # The sidecar answers early only once the tool exited for good; at
            # the end of a slice, a tool waiting for a restart is not done.
            if not info.alive and info.returncode is not None:
                if info.state == "fatal" or not self._restart_pending(proc, info):
                    return info.returncode
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(proc.argv, timeout)  # type: ignore[arg-type]

    def _signal(self, proc: Process, sig: Union[int, str, "_signal.Signals"]) -> None:
        self._check(proc)
        num = signal_number(int(sig) if isinstance(sig, _signal.Signals) else sig)
        if num is None or num <= 0:
            raise ValueError("unknown signal %r" % (sig,))
        self._call("signal", {"tag": proc.tag, "signal": num})

    def _restart_pending(self, proc: Process, info: ProcessInfo) -> bool:
        """Will the restart policy start the exited tool ``info`` describes again?"""
        if info.state == "fatal" or info.alive:
            return False
        if proc._restart is not None:
            return proc._restart.wants_restart(info.returncode)
        # A tool this client did not create: trust the latest state event.
        return self._tag_event_state(proc.tag) == "restarting"

    # -- captured output and stdin ---------------------------------------------------

    def _read_output(
        self,
        proc: Process,
        stream: str,
        offset: Optional[int],
        max_bytes: Optional[int],
        wait: Optional[float],
        encoding: str,
    ) -> OutputChunk:
        if stream not in STREAMS:
            raise ValueError("stream must be 'stdout' or 'stderr', not %r" % (stream,))
        if encoding not in ("text", "bytes", "base64"):
            raise ValueError("encoding must be 'text' or 'bytes', not %r" % (encoding,))
        params: Dict[str, Any] = {"tag": proc.tag, "stream": stream}
        if offset is not None:
            if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
                raise ValueError("offset must be a non-negative int, not %r" % (offset,))
            params["offset"] = offset
        if max_bytes is not None:
            if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
                raise ValueError("max_bytes must be a positive int, not %r" % (max_bytes,))
            params["max_bytes"] = min(max_bytes, MAX_READ_BYTES)
        if wait is not None:
            params["wait"] = min(_check_seconds(wait, "wait"), MAX_SECONDS)
        if encoding != "text":
            params["encoding"] = "base64"
        self._check(proc)
        try:
            result = self._call("read_output", params, (wait or 0.0) + REPLY_MARGIN)
        except NoSuchTagError:
            self._release(proc)
            raise
        except ProcMgrError as exc:
            if exc.code == -32602 and "not captured" in exc.message:
                raise ProcMgrError(
                    "%s of %r is not captured: create it with output=output_option.PIPE (%s)"
                    % (stream, proc.tag, exc.message),
                    code=exc.code, data=exc.data, tag=proc.tag,
                ) from None
            raise
        if not isinstance(result, dict):
            raise ProcMgrError("read_output: malformed reply %r" % (result,), tag=proc.tag)
        data = result.get("data") or ""
        if encoding != "text":
            data = base64.b64decode(data)
        return OutputChunk(
            data=data,
            offset=int(result.get("offset") or 0),
            overflow=bool(result.get("overflow")),
            eof=bool(result.get("eof")),
        )

    def _write_stdin(self, proc: Process, data: Any, eof: bool) -> int:
        raw = _stdin_bytes(data)
        self._check(proc)
        piece = raw[:STDIN_CHUNK]
        params: Dict[str, Any] = {"tag": proc.tag}
        if piece:
            if isinstance(data, str) and len(piece) == len(raw):
                params["data"] = data
            else:
                params["data_base64"] = base64.b64encode(piece).decode("ascii")
        if eof and not piece:
            params["eof"] = True
        written = self._stdin_call(proc, params)
        if eof and piece and written == len(raw):
            self._stdin_call(proc, {"tag": proc.tag, "eof": True})
        return written

    def _stdin_call(self, proc: Process, params: Dict[str, Any]) -> int:
        try:
            result = self._call("write_stdin", params)
        except NoSuchTagError:
            self._release(proc)
            raise
        if not isinstance(result, dict) or not isinstance(result.get("written"), int):
            raise ProcMgrError("write_stdin: malformed reply %r" % (result,), tag=proc.tag)
        return result["written"]

    def _write_stdin_all(self, proc: Process, data: Any, timeout: Optional[float], eof: bool) -> int:
        raw = _stdin_bytes(data)
        if timeout is not None:
            _check_seconds(timeout, "timeout")
        deadline = None if timeout is None else time.monotonic() + timeout
        view = memoryview(raw)
        done = 0
        pause = 0.0
        chunk = STDIN_CHUNK
        while done < len(raw):
            piece = view[done : done + chunk]
            n = self._write_stdin(proc, piece, False)
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
                        % (proc.tag, done, len(raw), timeout),
                        tag=proc.tag,
                        written=done,
                    )
                pause = min(pause, left)
            if pause:
                time.sleep(pause)
        if eof:
            self._close_stdin(proc)
        return done

    def _close_stdin(self, proc: Process) -> None:
        self._check(proc)
        try:
            self._stdin_call(proc, {"tag": proc.tag, "eof": True})
        except ProcMgrError as exc:
            if exc.code == -32602 and "was closed" in exc.message:
                return  # closed already: closing is idempotent
            raise

    # -- state events ------------------------------------------------------------------

    def _tag_event_seq(self, tag: str) -> int:
        with self._event_cond:
            return self._tag_seq.get(tag, 0)

    def _tag_event_state(self, tag: str) -> Optional[str]:
        with self._event_cond:
            return self._tag_state.get(tag)

    def _wait_tag_event(self, tag: str, after: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a state event of ``tag`` numbered above ``after``."""
        sc = self._sidecar
        if sc is None or "state-events" not in sc.features:
            time.sleep(min(timeout, 0.1))  # no events to wait for: look again soon
            return False
        end = time.monotonic() + timeout
        with self._event_cond:
            while self._tag_seq.get(tag, 0) <= after:
                left = end - time.monotonic()
                if left <= 0 or not sc.alive or self._sidecar is not sc:
                    return False
                self._event_cond.wait(min(left, 1.0))
        return True

    # -- notifications (reader thread: quick, no calls) -----------------------------

    def _handle_notification(self, sc: Sidecar, method: str, params: Any) -> None:
        if method == "state" and isinstance(params, dict):
            self._handle_state(sc, params)
            return
        if method != "exited" or not isinstance(params, dict):
            logger.debug("procmgr: ignoring notification %r", method)
            return
        raw = params.get("info")
        if not self._callbacks and not self._tracks(params.get("tag"), params.get("pid")):
            return  # no Process to update, nobody to call: a snapshot would be thrown away
        if isinstance(raw, dict):
            info = ProcessInfo.from_json(raw)
        else:
            info = ProcessInfo.from_json(
                {
                    "tag": params.get("tag"),
                    "pid": params.get("pid"),
                    "exit_code": params.get("exit_code"),
                    "signal": params.get("signal"),
                    "state": "exited",
                    "alive": False,
                }
            )
        proc = self._adopt(info, register=False)
        if self._callbacks:
            sc.dispatch(lambda: self._run_callbacks(proc))

    def _tracks(self, tag: Any, pid: Any) -> bool:
        """A Process that a snapshot of (tag, pid) would update exists (reader thread).

        Otherwise _adopt(register=False) would make a Process nobody holds.
        """
        if type(tag) is not str:
            return True  # let _adopt deal with it, as before
        if tag in self._current:
            return True
        return type(pid) is not int or (tag, pid) in self._objects

    def _run_callbacks(self, proc: Process) -> None:
        for cb in builtins.list(self._callbacks):
            try:
                cb(proc)
            except Exception:
                logger.exception("procmgr: on_exit callback %r raised for %r", cb, proc)

    def _handle_state(self, sc: Sidecar, params: Dict[str, Any]) -> None:
        current = self._sidecar
        if current is not None and current is not sc:
            return  # a late event of a sidecar that was replaced
        seq = params.get("seq")
        state = str(params.get("state", ""))
        tag = params.get("tag")
        raw = params.get("info")
        if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(tag, str):
            logger.warning("procmgr: malformed state notification: %r", params)
            return
        with self._event_cond:
            expected = self._last_seq + 1
            if seq > expected:
                self._missed += seq - expected
                logger.warning(
                    "procmgr: missed %d state event(s) (got seq %d after %d; %d missed in all)",
                    seq - expected, seq, self._last_seq, self._missed,
                )
            elif seq < expected:
                logger.warning("procmgr: state event seq %d came after %d", seq, self._last_seq)
            self._last_seq = max(self._last_seq, seq)
            self._tag_seq[tag] = max(seq, self._tag_seq.get(tag, 0))
            self._tag_state[tag] = state
            self._event_cond.notify_all()
        callbacks = bool(self._state_callbacks)
        if isinstance(raw, dict) and (callbacks or self._tracks(tag, raw.get("pid"))):
            info = ProcessInfo.from_json(raw)
            self._adopt(info, register=False)
        elif not callbacks:
            return  # e.g. "started" before create's reply: no Process yet, nobody to call
        else:
            info = ProcessInfo.from_json(raw if isinstance(raw, dict) else {"tag": tag, "state": state})
        if callbacks:
            sc.dispatch(lambda: self._run_state_callbacks(state, info, seq))

    def _run_state_callbacks(self, state: str, info: ProcessInfo, seq: int) -> None:
        for cb in builtins.list(self._state_callbacks):
            try:
                cb(state, info, seq)
            except Exception:
                logger.exception("procmgr: on_state callback %r raised for %s of %r", cb, state, info.tag)


def _notification_handler(manager: ProcessManager) -> Callable[[Sidecar, str, Any], None]:
    """A handler that does not keep the manager alive (so __del__ can still run)."""
    ref = weakref.ref(manager)

    def handle(sc: Sidecar, method: str, params: Any) -> None:
        m = ref()
        if m is not None:
            m._handle_notification(sc, method, params)

    return handle


def _environ_delta(base: Mapping[str, str], environ: Mapping[str, str]) -> Dict[str, Optional[str]]:
    """How ``environ`` differs from ``base``: changed or new values, None for removed."""
    delta: Dict[str, Optional[str]] = {k: v for k, v in environ.items() if base.get(k) != v}
    delta.update({k: None for k in base if k not in environ})
    return delta


def _host_environ(sc: Sidecar) -> "tuple[Dict[str, str], Dict[str, Optional[str]]]":
    """The host's os.environ now and its difference from the sidecar's (do not mutate either).

    Decoding all of os.environ and diffing it cost ~45 µs per create (38
    variables); both are kept with a copy of os.environ's encoded mapping
    (``_data``, which every change through os.environ updates) and recomputed
    only when that no longer compares equal (~0.5 µs).  os.putenv() bypasses
    os.environ, here as before.
    """
    data = getattr(os.environ, "_data", None)
    cache = sc.env_cache
    if cache is not None and cache[0] == data:
        return cache[1], cache[2]
    decodekey = getattr(os.environ, "decodekey", None)
    decodevalue = getattr(os.environ, "decodevalue", None)
    if type(data) is not dict or decodekey is None or decodevalue is None:
        environ = dict(os.environ)  # not CPython's os._Environ: no caching
        return environ, _environ_delta(sc.environ, environ)
    snap = dict(data)
    # Decoded from the same snapshot the cache is keyed by, so a change made
    # by another thread meanwhile cannot slip in unnoticed.
    environ = {decodekey(k): decodevalue(v) for k, v in snap.items()}
    delta = _environ_delta(sc.environ, environ)
    sc.env_cache = (snap, environ, delta)
    return environ, delta


def _require(features: frozenset, feature: str, what: str) -> None:
    if feature not in features:
        raise ProcMgrError(
            "%s: not supported by this procmgr sidecar (its hello lacks the %r feature); "
            "rebuild or upgrade the sidecar" % (what, feature)
        )


def _capture_options(
    output: Any, size: Any, file: Any, max_bytes: Any, backups: Any
) -> Optional[Dict[str, Dict[str, Any]]]:
    """Per-stream {"capture": {...}} objects from create's capture_* arguments (None: defaults)."""
    if size is None and file is None and max_bytes is None and backups is None:
        return None
    if output is not output_option.PIPE:
        raise ValueError("capture_size/capture_file/... need output=output_option.PIPE")
    common: Dict[str, Any] = {}
    for name, value, low, high in (
        ("capture_size", size, 1, MAX_CAPTURE_SIZE),
        ("capture_file_max_bytes", max_bytes, 1, None),
        ("capture_file_backups", backups, 0, None),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
            raise ValueError(
                "%s must be an int from %d%s, not %r" % (name, low, " to %d" % high if high else " up", value)
            )
    if size is not None:
        common["size"] = size
    paths: List[Optional[str]] = [None, None]
    if file is not None:
        if isinstance(file, tuple):
            if len(file) != 2:
                raise ValueError("capture_file as a tuple must be (stdout_path, stderr_path)")
            paths = [None if f is None else _str_path(f, "capture_file") for f in file]
        else:
            base = _str_path(file, "capture_file")
            paths = [base, base + ".stderr"]
    out: Dict[str, Dict[str, Any]] = {}
    for stream, path in zip(STREAMS, paths):
        opts = dict(common)
        if path is not None:
            opts["file"] = path
            if max_bytes is not None:
                opts["file_max_bytes"] = max_bytes
            if backups is not None:
                opts["file_backups"] = backups
        out[stream] = {"capture": opts}
    return out


def _stdin_bytes(data: Any) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError("stdin data must be str or bytes, not %s" % type(data).__name__)


def _output_params(
    output: Any, features: frozenset, capture: Optional[Dict[str, Dict[str, Any]]] = None
) -> Dict[str, Any]:
    if output is None or output is output_option.DISCARD:
        return {"stdout": "discard", "stderr": "discard"}
    if output is output_option.STDOUT:
        return {"stdout": "inherit", "stderr": "inherit"}
    if output is output_option.PIPE:
        if "capture" in features:
            if capture is not None:
                return capture
            return {"stdout": "capture", "stderr": "capture"}
        raise ProcMgrError(
            "output capture is not supported by this sidecar yet (output_option.PIPE); "
            "use output_option.STDOUT, output_option.DISCARD, or a file path"
        )
    if isinstance(output, str):
        for opt in output_option:
            if output.lower() in (opt.name.lower(), opt.value.lower()):
                raise ValueError(
                    "output=%r is a str, which names a file; for %s pass "
                    "output=output_option.%s (a file of that name: %r)"
                    % (output, opt.name.lower(), opt.name, "./" + output)
                )
    if isinstance(output, (str, bytes)) or hasattr(output, "__fspath__"):
        # A relative path is the sidecar's to resolve, against the tool's cwd.
        path = _str_path(output, "output")
        return {"stdout": {"file": path, "append": True}, "stderr": "stdout"}
    raise TypeError("output must be an output_option or a file path, not %r" % (output,))


def _argv_list(argv: Any) -> List[str]:
    """create's argv as a list of str; a mistake names the item at fault."""
    if isinstance(argv, (str, bytes)) or hasattr(argv, "__fspath__"):
        return [_str_path(argv, "argv")]
    if not isinstance(argv, (builtins.list, tuple)) and not hasattr(argv, "__iter__"):
        raise TypeError("argv must be a list of str, not %s" % type(argv).__name__)
    args = []
    for i, a in enumerate(argv):
        if not isinstance(a, (str, bytes)) and not hasattr(a, "__fspath__"):
            raise TypeError(
                "argv[%d] must be a str (or a path), not %s: %r" % (i, type(a).__name__, a)
            )
        args.append(_str_path(a, "argv[%d]" % i))
    if not args:
        raise ValueError("argv must not be empty")
    return args


def _split_hint(argv: str) -> List[str]:
    try:
        return shlex.split(argv)
    except ValueError:
        return argv.split()


def _str_path(value: Any, what: str) -> str:
    value = os.fspath(value)
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    if not isinstance(value, str):
        raise TypeError("%s must be str or a path, not %r" % (what, value))
    return value


def _check_seconds(value: Any, what: str, sent: bool = False) -> float:
    """See _seconds.py; ``sent``: the value goes to the sidecar (at most MAX_SECONDS)."""
    return seconds(value, what, MAX_SECONDS if sent else None)


# -- fork and exit ------------------------------------------------------------------


def _after_fork_in_child() -> None:
    for m in builtins.list(_managers):
        try:
            m._after_fork_in_child()
        except Exception:  # pragma: no cover - never break the child
            pass


def _shutdown_at_exit() -> None:
    for m in builtins.list(_managers):
        if m._sidecar is None or m._owner_pid != os.getpid() or m._foreign_pid is not None:
            continue
        try:
            m.shutdown()
        except Exception:
            logger.exception("procmgr: shutting down %r at exit failed", m)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_shutdown_at_exit)
