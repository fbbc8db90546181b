"""The sidecar of one ProcessManager: started on first use, owned by one
process (fork detection), shut down on request or at interpreter exit.

A Session holds at most one running Sidecar (_transport.py) at a time and
numbers them (``generation``): a Process remembers the generation it was
started under, so a Process of an earlier sidecar -- before a shutdown of the
default manager, or inherited through fork -- is known to be dead.

After ``os.fork()`` the child must not touch the parent's sidecar: the session
forgets it (closing only the child's copies of the pipes).  The default
manager's session then starts a fresh sidecar of the child's own on first
use; any other refuses every call with ProcMgrError.  What the rest of the
manager keeps per sidecar (the Process registry, the state-event counters) is
reset through the ``on_start`` and ``on_fork`` hooks.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from typing import Any, Callable, Dict, Optional

from ._binary import find_binary
from ._errors import ProcMgrError
from ._transport import Sidecar

__all__ = ["Session", "SIDECAR_DEFAULT_STOP_TIMEOUT"]

logger = logging.getLogger("procmgr")

#: The stop timeout the sidecar uses when neither the tool nor the manager sets one.
SIDECAR_DEFAULT_STOP_TIMEOUT = 3.0

Hook = Callable[[], None]

def _nothing() -> None:
    pass


# Every session, so that the fork and exit hooks below can find them.
_sessions: "weakref.WeakSet[Session]" = weakref.WeakSet()


class Session:
    """The sidecar connection of one ProcessManager, and the process it belongs to.

    ``at_exit``: what shuts the owner down at interpreter exit (held weakly:
    a collected manager abandons its sidecar in its __del__ instead).  The
    owner sets the hooks before the first connection: ``on_notification``
    is given to every Sidecar started (see Sidecar); ``on_start`` is called
    under the start lock just before a new sidecar starts; ``on_fork`` in a
    forked child once the session forgot the parent's sidecar.
    """

    def __init__(
        self,
        binary: Any,
        *,
        stop_timeout: Optional[float],
        log_level: Optional[str],
        log_file: Optional[str],
        is_default: bool,
        at_exit: Hook,
    ) -> None:
        self.binary_arg = binary
        self.stop_timeout = stop_timeout
        self.log_level = log_level
        self.log_file = log_file
        self.is_default = is_default
        self.on_notification: Optional[Callable[[Sidecar, str, Any], None]] = None
        self.on_start: Hook = _nothing
        self.on_fork: Hook = _nothing
        self._at_exit = weakref.WeakMethod(at_exit) if hasattr(at_exit, "__self__") else lambda: at_exit
        self.generation = 0
        self._reset()
        _sessions.add(self)

    def _reset(self) -> None:
        """Fresh per-process state (at creation, and in a forked child)."""
        self.owner_pid = os.getpid()
        #: The parent's pid in a forked child of a non-default manager (unusable here).
        self.foreign_pid: Optional[int] = None
        self.start_lock = threading.Lock()
        self.sidecar: Optional[Sidecar] = None
        self.closed = False
        # A Process of the sidecar before (or of the parent's) is dead.
        self.generation += 1

    def own_process(self) -> None:
        """Raise ProcMgrError in a forked child for a manager of the parent."""
        if os.getpid() != self.owner_pid:
            # fork() without our at-fork hook having run (should not happen).
            self.after_fork_in_child()
        if self.foreign_pid is not None:
            raise ProcMgrError(
                "this ProcessManager belongs to process %d and cannot be used after "
                "os.fork() (this is process %d); create a new ProcessManager here, or use "
                "the default `procmgr`, which starts its own sidecar in each process"
                % (self.foreign_pid, os.getpid())
            )

    def connection(self) -> Sidecar:
        """The running sidecar, started now if there is none (and the session is open)."""
        self.own_process()
        sc = self.sidecar
        if sc is not None:
            return sc
        with self.start_lock:
            if self.sidecar is None:
                if self.closed:
                    raise ProcMgrError("this ProcessManager was shut down")
                binary = find_binary(self.binary_arg)
                self.generation += 1
                self.on_start()
                self.sidecar = Sidecar(
                    binary,
                    stop_timeout=self.stop_timeout,
                    log_level=self.log_level,
                    log_file=self.log_file,
                    on_notification=self.on_notification,
                )
            return self.sidecar

    def call(self, method: str, params: Dict[str, Any], timeout: Optional[float] = None) -> Any:
        """One request to the sidecar (started if need be); see Sidecar.call."""
        return self.connection().call(method, params, timeout)

    def after_fork_in_child(self) -> None:
        sc = self.sidecar
        if sc is not None:
            sc.forget_after_fork()
        parent = self.owner_pid
        self._reset()
        if not self.is_default:
            self.foreign_pid = parent
            self.closed = True
        self.on_fork()

    def ours(self) -> bool:
        """A sidecar runs and this process owns it (not a forked child)."""
        return (
            self.sidecar is not None
            and os.getpid() == self.owner_pid
            and self.foreign_pid is None
        )

    def detach(self) -> Optional[Sidecar]:
        """Take the running sidecar away, to shut it down; None when there is
        none or it is not ours (a forked child).  Afterwards the session
        refuses calls -- except the default one, which starts a new sidecar."""
        if os.getpid() != self.owner_pid or self.foreign_pid is not None:
            return None
        with self.start_lock:
            sc = self.sidecar
            self.sidecar = None
            if not self.is_default:
                self.closed = True
        return sc

    def abandon(self) -> None:
        """Let the sidecar go without waiting (closing its stdin makes it stop every tool)."""
        sc = self.sidecar
        if sc is not None and os.getpid() == self.owner_pid and self.foreign_pid is None:
            sc.abandon()


# -- fork and exit ------------------------------------------------------------------


def _after_fork_in_child() -> None:
    for s in list(_sessions):
        try:
            s.after_fork_in_child()
        except Exception:  # pragma: no cover - never break the child
            pass


def _shutdown_at_exit() -> None:
    for s in list(_sessions):
        if not s.ours():
            continue
        shutdown = s._at_exit()
        if shutdown is None:
            continue
        try:
            shutdown()
        except Exception:
            logger.exception("procmgr: shutting down %r at exit failed", getattr(shutdown, "__self__", s))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_shutdown_at_exit)
