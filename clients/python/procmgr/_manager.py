"""ProcessManager and Process: CASA's procmgr API on top of the sidecar."""

from __future__ import annotations

import atexit
import builtins
import logging
import os
import signal as _signal
import subprocess
import threading
import time
import weakref
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from ._errors import NoSuchTagError, ProcMgrError, SidecarError
from ._info import ProcessInfo, output_option, signal_number
from ._transport import REPLY_MARGIN, Sidecar, find_binary

__all__ = ["ProcessManager", "Process"]

logger = logging.getLogger("procmgr")

#: The stop timeout the sidecar uses when neither the tool nor the manager sets one.
SIDECAR_DEFAULT_STOP_TIMEOUT = 3.0
#: A wait() without timeout asks the sidecar in slices of this many seconds.
WAIT_SLICE = 30.0

ExitCallback = Callable[["Process"], Any]
PathLike = Union[str, "os.PathLike[str]"]

# Every manager, so that fork and exit handling can find them.
_managers: "weakref.WeakSet[ProcessManager]" = weakref.WeakSet()


class Process:
    """One tool started through a ProcessManager (CASA's process "container").

    ``tag``, ``pid`` and ``argv`` never change.  Methods ask the sidecar for the
    current state; once ``stop()`` released the tag (or the manager shut down),
    they raise NoSuchTagError instead of acting on whatever now has that tag.
    ``returncode`` still gives the last known status then.
    """

    def __init__(self, manager: "ProcessManager", info: ProcessInfo) -> None:
        self._manager = manager
        self._generation = manager._generation  # which sidecar of the manager started it
        self._info = info
        self._released = False
        self.tag: str = info.tag
        self.pid: int = info.pid
        self.argv: List[str] = builtins.list(info.argv)

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
        """A fresh snapshot of the tool from the sidecar."""
        return self._manager._refresh(self)

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
        # never go back from "exited" to "running".
        if info.pid == self.pid and info.newer_than(self._info):
            self._info = info

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

    ``binary``: the sidecar executable; default ``$PROCMGR_BIN``, else
    ``procmgr`` on PATH.  ``stop_timeout``: default seconds between the stop
    signal and SIGKILL for every tool (the sidecar's own default is 3 s).
    ``log_level``: the sidecar's log level (debug, info, warn, error).

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
        _lazy: bool = False,
    ) -> None:
        if stop_timeout is not None:
            _check_seconds(stop_timeout, "stop_timeout")
        self._binary_arg = binary
        self._stop_timeout = stop_timeout
        self._log_level = log_level
        self._is_default = _lazy
        self._callbacks: List[ExitCallback] = []
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
        # Bumped for every new sidecar: a Process of an earlier one (before a
        # shutdown of the default manager, or inherited through fork) is dead.
        self._generation = getattr(self, "_generation", 0) + 1

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
                self._sidecar = Sidecar(
                    binary,
                    stop_timeout=self._stop_timeout,
                    log_level=self._log_level,
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
    ) -> Process:
        """Start a tool under ``tag`` and return its Process once it has been exec'd.

        ``argv``: a list (argv[0] without a slash is looked up in PATH), or a
        str naming a single executable (no shell).  ``output``: an
        output_option, or a file path that receives both stdout and stderr
        (appended).  ``cwd``: default the host's current directory.  ``env``:
        extra variables merged over the host's *current* os.environ (a value
        of None removes a variable) -- unlike subprocess, where env replaces
        the environment.  ``stop_timeout``: seconds between the stop signal
        and SIGKILL for this tool.

        Raises TagInUseError if the tag is in use and SpawnError (with the OS
        reason) if the tool cannot start; CASA printed and returned None.
        """
        if not isinstance(tag, str) or not tag:
            raise ValueError("tag must be a non-empty str, not %r" % (tag,))
        if isinstance(argv, (str, bytes)) or hasattr(argv, "__fspath__"):
            args = [_str_path(argv, "argv")]
        else:
            args = [_str_path(a, "argv item") for a in argv]
        if not args:
            raise ValueError("argv must not be empty")
        sc = self._connection()
        params: Dict[str, Any] = {"tag": tag, "argv": args}
        params.update(_output_params(output, sc.features))
        params["cwd"] = _str_path(cwd, "cwd") if cwd is not None else os.getcwd()
        environ = dict(os.environ)
        if env is not None:
            for key, value in env.items():
                if not isinstance(key, str) or not key or "=" in key:
                    raise ValueError("bad environment variable name %r" % (key,))
                if value is None:
                    environ.pop(key, None)
                elif isinstance(value, str):
                    environ[key] = value
                else:
                    raise TypeError("environment value of %s must be str or None" % key)
        params["env"] = environ
        params["inherit_env"] = False
        if stop_timeout is not None:
            _check_seconds(stop_timeout, "stop_timeout")
            params["stop_timeout"] = stop_timeout
        result = sc.call("create", params)
        info = ProcessInfo.from_json(result)
        if stop_timeout is not None:
            with self._reg_lock:
                self._tool_stop_timeouts[tag] = float(stop_timeout)
        return self._adopt(info, register=True)

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
        return self._adopt(ProcessInfo.from_json(result), register=True)

    def list(self) -> List[Process]:
        """Every tool whose tag is in use, sorted by tag."""
        result = self._call("list", {})
        return [self._adopt(ProcessInfo.from_json(item), register=True) for item in result or ()]

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

    def shutdown(self, timeout: Optional[float] = None) -> int:
        """Stop every tool (in parallel) and the sidecar; return how many tools were stopped.

        Idempotent.  Afterwards this manager refuses calls -- except the
        default ``procmgr``, which starts a new sidecar on its next use.
        In a forked child it does nothing (the parent's sidecar is not ours).
        """
        if timeout is not None:
            _check_seconds(timeout, "timeout")
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
        """The one Process object for (tag, pid), updated with ``info``."""
        with self._reg_lock:
            key = (info.tag, info.pid)
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
        if cur is not None and cur is not proc and cur.pid != proc.pid:
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
        info = ProcessInfo.from_json(result)
        if info.pid != proc.pid:
            proc._released = True
            raise NoSuchTagError(
                "tag %r now names another process (pid %d, not %d)" % (proc.tag, info.pid, proc.pid),
                tag=proc.tag,
            )
        return self._adopt(info, register=True)._info

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
            _check_seconds(timeout, "timeout")
            params["timeout"] = timeout
        grace = timeout if timeout is not None else self._stop_grace(proc.tag)
        try:
            result = self._call("stop", params, grace + REPLY_MARGIN)
        except NoSuchTagError:
            self._release(proc)
            raise
        info = ProcessInfo.from_json(result)
        if info.pid == proc.pid:
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
            if info.pid != proc.pid:
                proc._released = True
                raise NoSuchTagError(
                    "tag %r now names another process" % proc.tag, tag=proc.tag
                )
            proc._update(info)
            if not info.alive and info.returncode is not None:
                return info.returncode
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(proc.argv, timeout)  # type: ignore[arg-type]

    def _signal(self, proc: Process, sig: Union[int, str, "_signal.Signals"]) -> None:
        self._check(proc)
        num = signal_number(int(sig) if isinstance(sig, _signal.Signals) else sig)
        if num is None or num <= 0:
            raise ValueError("unknown signal %r" % (sig,))
        self._call("signal", {"tag": proc.tag, "signal": num})

    # -- notifications (reader thread: quick, no calls) -----------------------------

    def _handle_notification(self, sc: Sidecar, method: str, params: Any) -> None:
        if method != "exited" or not isinstance(params, dict):
            logger.debug("procmgr: ignoring notification %r", method)
            return
        raw = params.get("info")
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

    def _run_callbacks(self, proc: Process) -> None:
        for cb in builtins.list(self._callbacks):
            try:
                cb(proc)
            except Exception:
                logger.exception("procmgr: on_exit callback %r raised for %r", cb, proc)


def _notification_handler(manager: ProcessManager) -> Callable[[Sidecar, str, Any], None]:
    """A handler that does not keep the manager alive (so __del__ can still run)."""
    ref = weakref.ref(manager)

    def handle(sc: Sidecar, method: str, params: Any) -> None:
        m = ref()
        if m is not None:
            m._handle_notification(sc, method, params)

    return handle


def _output_params(output: Any, features: frozenset) -> Dict[str, Any]:
    if output is None or output is output_option.DISCARD:
        return {"stdout": "discard", "stderr": "discard"}
    if output is output_option.STDOUT:
        return {"stdout": "inherit", "stderr": "inherit"}
    if output is output_option.PIPE:
        if "capture" in features:
            return {"stdout": "capture", "stderr": "capture"}
        raise ProcMgrError(
            "output capture is not supported by this sidecar yet (output_option.PIPE); "
            "use output_option.STDOUT, output_option.DISCARD, or a file path"
        )
    if isinstance(output, (str, bytes)) or hasattr(output, "__fspath__"):
        path = os.path.abspath(_str_path(output, "output"))
        return {"stdout": {"file": path, "append": True}, "stderr": "stdout"}
    raise TypeError("output must be an output_option or a file path, not %r" % (output,))


def _str_path(value: Any, what: str) -> str:
    value = os.fspath(value)
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    if not isinstance(value, str):
        raise TypeError("%s must be str or a path, not %r" % (what, value))
    return value


def _check_seconds(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError("%s must be a non-negative number of seconds, not %r" % (what, value))


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
