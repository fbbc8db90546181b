"""The sidecar's notifications: ``exited`` and ``state`` events, the callbacks
that hear them, and waits for the next event of a tag.

``handle`` runs on the transport's reader thread, so it stays quick and makes
no calls: it updates the Processes the registry holds and numbers the state
events; the user's on_exit/on_state callbacks run later, in order, on the
transport's dispatcher thread (a slow callback never delays a reply).

State events are numbered 1, 2, 3... per sidecar (``seq``): a gap means the
sidecar dropped some, and is counted in ``missed`` and logged.  The latest
event of each tag is kept, so that a wait (wait_for_output across a restart)
can sleep until the tag's next state change instead of polling.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any, Callable, Dict, List, Optional

from ._info import ProcessInfo
from ._registry import Registry
from ._session import Session
from ._transport import Sidecar

__all__ = ["Events", "ExitCallback", "StateCallback"]

logger = logging.getLogger("procmgr")

#: ``on_exit`` callbacks get the Process (_process.py) of the tool that exited.
ExitCallback = Callable[[Any], Any]
StateCallback = Callable[[str, ProcessInfo, int], Any]


class Events:
    """The notifications of ``session``'s sidecars, applied to ``registry``'s Processes.

    ``owner``: a weak reference to the manager these belong to.  Once it is
    dead, notifications are dropped (see handler).
    """

    def __init__(self, session: Session, registry: Registry, owner: Callable[[], Any]) -> None:
        self._session = session
        self._registry = registry
        self._owner = owner
        self.exit_callbacks: List[ExitCallback] = []
        self.state_callbacks: List[StateCallback] = []
        self.reset()

    def reset(self) -> None:
        """Fresh state-event bookkeeping (every sidecar numbers its events from 1)."""
        self._cond = threading.Condition()
        self.last_seq = 0
        self.missed = 0
        self._tag_seq: Dict[str, int] = {}  # seq of the latest state event of each tag
        self._tag_state: Dict[str, str] = {}  # and its state

    def handler(self) -> Callable[[Sidecar, str, Any], None]:
        """``handle`` for Sidecar's on_notification, without keeping this object
        (hence the manager's registry) alive: so the manager's __del__ can run.

        Once the manager is freed, every notification is dropped: the events,
        registry and session hold each other (the session's hooks), so they
        outlive the manager until the next cyclic GC, and a late event must
        not make a Process of a manager that is gone.  While one is handled,
        the manager is held, so the registry's factory always gets it.
        """
        ref = weakref.ref(self)

        def handle(sc: Sidecar, method: str, params: Any) -> None:
            events = ref()
            if events is None:
                return
            owner = events._owner()
            if owner is None:
                return  # the manager was freed: nobody to update or call
            events.handle(sc, method, params)
            del owner  # (held until here: see above)

        return handle

    # -- waits ---------------------------------------------------------------

    def tag_seq(self, tag: str) -> int:
        """The seq of the latest state event of ``tag`` (0: none yet)."""
        with self._cond:
            return self._tag_seq.get(tag, 0)

    def tag_state(self, tag: str) -> Optional[str]:
        """The state of the latest state event of ``tag`` (None: none yet)."""
        with self._cond:
            return self._tag_state.get(tag)

    def wait(self, tag: str, after: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a state event of ``tag`` numbered above ``after``.

        Without state events (an older sidecar) this only pauses briefly, so
        that the caller looks again soon.
        """
        sc = self._session.sidecar
        if sc is None or "state-events" not in sc.features:
            time.sleep(min(timeout, 0.1))  # no events to wait for: look again soon
            return False
        end = time.monotonic() + timeout
        cond = self._cond
        with cond:
            while self._tag_seq.get(tag, 0) <= after:
                left = end - time.monotonic()
                if left <= 0 or not sc.alive or self._session.sidecar is not sc:
                    return False
                cond.wait(min(left, 1.0))
        return True

    # -- notifications (reader thread: quick, no calls) -----------------------------

    def handle(self, sc: Sidecar, method: str, params: Any) -> None:
        """A notification from ``sc``: ``state`` or ``exited`` (others are ignored)."""
        if method == "state" and isinstance(params, dict):
            self._handle_state(sc, params)
            return
        if method != "exited" or not isinstance(params, dict):
            logger.debug("procmgr: ignoring notification %r", method)
            return
        raw = params.get("info")
        if not self.exit_callbacks and not self._registry.tracks(params.get("tag"), params.get("pid")):
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
        proc = self._registry.adopt(info, register=False)
        if self.exit_callbacks:
            sc.dispatch(lambda: self._run_exit_callbacks(proc))

    def _run_exit_callbacks(self, proc: Any) -> None:
        for cb in list(self.exit_callbacks):
            try:
                cb(proc)
            except Exception:
                logger.exception("procmgr: on_exit callback %r raised for %r", cb, proc)

    def _handle_state(self, sc: Sidecar, params: Dict[str, Any]) -> None:
        current = self._session.sidecar
        if current is not None and current is not sc:
            return  # a late event of a sidecar that was replaced
        seq = params.get("seq")
        state = str(params.get("state", ""))
        tag = params.get("tag")
        raw = params.get("info")
        if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(tag, str):
            logger.warning("procmgr: malformed state notification: %r", params)
            return
        with self._cond:
            expected = self.last_seq + 1
            if seq > expected:
                self.missed += seq - expected
                logger.warning(
                    "procmgr: missed %d state event(s) (got seq %d after %d; %d missed in all)",
                    seq - expected, seq, self.last_seq, self.missed,
                )
            elif seq < expected:
                logger.warning("procmgr: state event seq %d came after %d", seq, self.last_seq)
            self.last_seq = max(self.last_seq, seq)
            self._tag_seq[tag] = max(seq, self._tag_seq.get(tag, 0))
            self._tag_state[tag] = state
            self._cond.notify_all()
        callbacks = bool(self.state_callbacks)
        if isinstance(raw, dict) and (callbacks or self._registry.tracks(tag, raw.get("pid"))):
            info = ProcessInfo.from_json(raw)
            self._registry.adopt(info, register=False)
        elif not callbacks:
            return  # e.g. "started" before create's reply: no Process yet, nobody to call
        else:
            info = ProcessInfo.from_json(raw if isinstance(raw, dict) else {"tag": tag, "state": state})
        if callbacks:
            sc.dispatch(lambda: self._run_state_callbacks(state, info, seq))

    def _run_state_callbacks(self, state: str, info: ProcessInfo, seq: int) -> None:
        for cb in list(self.state_callbacks):
            try:
                cb(state, info, seq)
            except Exception:
                logger.exception("procmgr: on_state callback %r raised for %s of %r", cb, state, info.tag)
