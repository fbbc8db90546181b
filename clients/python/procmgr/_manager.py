"""ProcessManager: CASA's procmgr API, a thin face over the client's parts.

Each part is a module of its own, doing one job:

* _session: the sidecar -- started on first use, owned by one process (fork
  detection), shut down on request and at interpreter exit;
* _transport: the sidecar process and the JSON-RPC connection to it;
* _registry: the one Process object per tool run, and which holds each tag;
* _events: notifications (state and exit), their callbacks, waits for an event;
* _process: Process, which carries out its own operations;
* _params: ``create``'s params from its arguments (no calls);
* _output, _options, _info, _stats: the values passed in and out;
* _seconds: the one validator of durations; _errors: the exceptions.

ProcessManager wires them together and adds the calls on tags (create, stop,
running, fetch, list, table, shutdown...).  Who imports whom, from the top
floor down (every import counted, TYPE_CHECKING ones too; no module imports
one above it, so there is no cycle)::

    _manager   -> _process, _events, _registry, _session, _params, _transport,
                  _options, _stats, _info, _seconds, _errors
    _process   -> _events, _registry, _session, _transport, _output, _options,
                  _stats, _info, _seconds, _errors
    _events    -> _registry, _session, _transport, _info
    _registry  -> _session, _transport, _info, _seconds, _errors
    _params    -> _options, _output, _info, _errors
    _session   -> _transport, _binary, _errors
    _transport -> _seconds, _errors
    _output    -> _seconds, _errors
    _options   -> _seconds
    _stats     -> _info
    _binary    -> _errors
    _info, _seconds, _errors -> (nothing of procmgr)

A module lower down that needs an object of one higher up is handed it
rather than importing its module: the registry gets a factory of Processes
(and keeps them untyped), an OutputStream its Process, a Process its
manager (the last two described as a typing.Protocol).
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from ._errors import NoSuchTagError, ProcMgrError, SpawnError
from ._events import Events, ExitCallback, StateCallback
from ._info import ProcessInfo, output_option
from ._options import Ready, Restart
from ._params import argv_list, create_params, split_hint, str_path
from ._process import Process
from ._registry import Registry
from ._seconds import seconds
from ._session import Session
from . import _stats
from ._transport import REPLY_MARGIN, Sidecar

__all__ = ["ProcessManager", "Process"]

logger = logging.getLogger("procmgr")

PathLike = Union[str, "os.PathLike[str]"]


class ProcessManager:
    """Starts, finds and stops tagged tools through one procmgr sidecar.

    ``binary``: the sidecar executable; default ``$PROCMGR_BIN``, else the
    one bundled in a platform wheel, else ``procmgr`` on PATH (_binary.py).
    ``stop_timeout``: default seconds between the stop signal and SIGKILL
    for every tool (the sidecar's own default is 3 s).
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
            seconds(stop_timeout, "stop_timeout", sent=True)
        session = Session(
            binary,
            stop_timeout=stop_timeout,
            log_level=log_level,
            log_file=None if log_file is None else str_path(log_file, "log_file"),
            is_default=_lazy,
            at_exit=self.shutdown,
        )
        # No part holds the manager (only its Processes do): a manager nobody
        # references is freed at once, and its __del__ lets the sidecar go.
        # The reader thread holds the notification handler, which holds the
        # events only weakly and drops every notification once the manager
        # is dead (its parts live on in a cycle until the cyclic GC).
        me = weakref.ref(self)

        def make(info: ProcessInfo) -> Process:
            manager = me()
            if manager is None:  # not reached: every caller holds the manager (see Events.handler)
                raise ProcMgrError("this ProcessManager was freed")
            return Process(manager, info)

        registry = Registry(session, make)
        events = Events(session, registry, me)
        session.on_notification = events.handler()
        session.on_start = events.reset  # every sidecar numbers its events from 1

        def forked() -> None:  # the parent's Processes and events are not ours
            registry.reset()
            events.reset()

        session.on_fork = forked
        self._session = session
        self._registry = registry
        self._events = events
        if not _lazy:
            session.connection()

    def _connection(self) -> Sidecar:
        """The running sidecar, started if need be (for tests and tools)."""
        return self._session.connection()

    @property
    def _sidecar(self) -> Optional[Sidecar]:
        """The running sidecar, if any (for tests and tools)."""
        return self._session.sidecar

    @property
    def pid(self) -> int:
        """The sidecar's pid (starts the default manager's sidecar)."""
        return self._session.connection().pid

    @property
    def log_path(self) -> str:
        """The sidecar's log file."""
        return self._session.connection().log_path

    @property
    def features(self) -> frozenset:
        """Optional features the sidecar announced in hello (e.g. "capture")."""
        return self._session.connection().features

    @property
    def sidecar_version(self) -> str:
        """The sidecar's version, from hello."""
        return str(self._session.connection().hello.get("version", ""))

    @property
    def session(self) -> str:
        """The session id every tool carries in PROCMGR_SESSION (from hello; "" if not sent)."""
        return str(self._session.connection().hello.get("session", ""))

    @property
    def last_event_seq(self) -> int:
        """The ``seq`` of the latest state event received from the current sidecar (0: none yet)."""
        return self._events.last_seq

    @property
    def missed_events(self) -> int:
        """How many state events the current sidecar sent that never arrived.

        Events are numbered 1, 2, 3... per sidecar; a gap (the sidecar drops
        notifications when the host does not read them fast enough) is
        counted here and logged as a warning.
        """
        return self._events.missed

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
        args = argv_list(argv)
        if stop_timeout is not None:
            seconds(stop_timeout, "stop_timeout", sent=True)
        sc = self._session.connection()
        params, ready_spec, restart_spec = create_params(
            tag, args, output,
            cwd=cwd, env=env, stop_timeout=stop_timeout, clear_env=clear_env, stdin=stdin,
            ready=ready, restart=restart, capture_size=capture_size, capture_file=capture_file,
            capture_file_max_bytes=capture_file_max_bytes, capture_file_backups=capture_file_backups,
            features=sc.features, sidecar=sc,
        )
        reply_wait: Optional[float] = None
        if ready_spec is not None:
            grace = stop_timeout if stop_timeout is not None else self._registry.stop_grace(tag)
            reply_wait = ready_spec.wait_seconds + grace + REPLY_MARGIN
        try:
            # Interrupted while the sidecar still creates (KeyboardInterrupt
            # during a readiness wait): stop the tool and free the tag first.
            result = sc.call(
                "create", params, reply_wait,
                on_abandon=lambda: self._abort_create(sc, tag, stop_timeout),
            )
        except SpawnError as exc:
            if exc.reason == "exec_not_found" and isinstance(argv, str) and len(argv.split()) > 1:
                raise SpawnError(
                    "%s; a str argv names one executable (no shell): pass a list, e.g. %r"
                    % (exc.message, split_hint(argv)),
                    code=exc.code, data=exc.data, tag=exc.tag,
                ) from None
            raise
        info = ProcessInfo.from_json(result)
        if stop_timeout is not None:
            self._registry.set_stop_timeout(tag, stop_timeout)
        proc = self._registry.adopt(info, register=True)
        proc._created_with(restart_spec)
        return proc

    def _abort_create(self, sc: Sidecar, tag: str, stop_timeout: Optional[float]) -> None:
        """Stop ``tag``, whose create the caller gave up, waiting a bounded time.

        The sidecar ends a readiness wait at once when its tag is stopped (the
        abandoned create then answers -32005); whatever fails here is logged,
        never raised over the interruption that brought us here.
        """
        params, reply_wait = self._registry.stop_request(tag, stop_timeout)
        try:
            sc.call("stop", params, reply_wait)
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
        registry = self._registry
        params, reply_wait = registry.stop_request(tag, timeout)
        try:
            result = self._session.call("stop", params, reply_wait)
        except NoSuchTagError:
            cur = registry.holder(tag)
            if cur is not None:
                registry.release(cur)  # whatever we knew of the tag is stale
            raise
        info = ProcessInfo.from_json(result)
        cur = registry.holder(tag)
        if cur is not None:
            cur._stopped(info)
        return info.returncode

    def running(self, tag: str) -> bool:
        """True while ``tag`` is in use: from create until stop, even after the tool crashed."""
        return bool(self._session.call("running", {"tag": tag}))

    def fetch(self, tag: str) -> Optional[Process]:
        """The Process of ``tag``, or None if the tag is not in use."""
        result = self._session.call("fetch", {"tag": tag})
        registry = self._registry
        if result is None:
            registry.forget(tag)
            return None
        return registry.adopt(registry.snapshot(result), register=True)

    def list(self) -> List[Process]:
        """Every tool whose tag is in use, sorted by tag."""
        result = self._session.call("list", {})
        registry = self._registry
        return [registry.adopt(registry.snapshot(item), register=True) for item in result or ()]

    def table(self) -> _stats.ProcessTable:
        """Every tool in use with what it costs, in one call: rows of (tag, pid,
        state, uptime, restarts, processes, cpu_seconds, rss); ``print()`` it for
        an aligned table, or show it in Jupyter."""
        result = self._session.call("list", {"stats": True})
        rows = []
        for item in result or ():
            info = ProcessInfo.from_json(item)
            self._registry.adopt(info, register=True)
            rows.append(_stats.TableRow.of(info, _stats.ProcessStats.from_json(item.get("stats"))))
        return _stats.ProcessTable(rows)

    def _repr_html_(self) -> str:
        # Its table, without starting a sidecar that is not running (the lazy
        # default manager) and without raising.
        session = self._session
        if session.sidecar is None or session.closed or session.foreign_pid is not None:
            return _stats.plain_html(repr(self))
        try:
            return self.table()._repr_html_()
        except ProcMgrError as e:
            return _stats.plain_html("%r: %s" % (self, e))

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
        self._events.exit_callbacks.append(callback)
        return callback

    def remove_on_exit(self, callback: ExitCallback) -> None:
        """Undo on_exit(callback)."""
        try:
            self._events.exit_callbacks.remove(callback)
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
        self._events.state_callbacks.append(callback)
        return callback

    def remove_on_state(self, callback: StateCallback) -> None:
        """Undo on_state(callback)."""
        try:
            self._events.state_callbacks.remove(callback)
        except ValueError:
            pass

    def shutdown(self, timeout: Optional[float] = None) -> int:
        """Stop every tool (in parallel) and the sidecar; return how many tools were stopped.

        Idempotent.  Afterwards this manager refuses calls -- except the
        default ``procmgr``, which starts a new sidecar on its next use.
        In a forked child it does nothing (the parent's sidecar is not ours).
        """
        if timeout is not None:
            seconds(timeout, "timeout", sent=True)
        sc = self._session.detach()
        if sc is None:
            return 0
        released, grace = self._registry.release_all()
        wait = (timeout if timeout is not None else grace) + REPLY_MARGIN
        try:
            return sc.shutdown(timeout, wait)
        finally:
            for p in released:
                p._shut_down()

    def close(self) -> None:
        """Same as shutdown()."""
        self.shutdown()

    def __enter__(self) -> "ProcessManager":
        self._session.connection()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __del__(self) -> None:
        # Never wait here: closing the sidecar's stdin makes it stop every tool.
        try:
            self._session.abandon()
        except Exception:
            pass

    def __repr__(self) -> str:
        session = self._session
        kind = "default " if session.is_default else ""
        if session.foreign_pid is not None:
            return "<procmgr.ProcessManager %sof process %d (unusable here)>" % (
                kind, session.foreign_pid)
        sc = session.sidecar
        if sc is None:
            state = "shut down" if session.closed else "not started"
            return "<procmgr.ProcessManager %s(%s)>" % (kind, state)
        return "<procmgr.ProcessManager %ssidecar pid=%d tools=%d log=%s>" % (
            kind,
            sc.pid,
            len(self._registry.current),
            sc.log_path,
        )
