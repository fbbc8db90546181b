"""The Process objects of one manager: one per tool run, and which one holds each tag.

There is exactly one Process object per (tag, pid) while anyone references
it, and a restart's new run belongs to the Process of the run before (a
Process follows its tag from ``create`` until ``stop``).  A Process whose tag
was released (``stop``, a shutdown, another tool now using the tag) is marked
``_released``, and its methods then raise NoSuchTagError rather than act on
whatever has the tag now.

This module makes Processes through the factory it is given and never
imports _process.py (which uses it): the registry only needs a Process's
``tag``, ``pid``, ``_info``, ``_released``, ``_generation`` and ``_update``.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

from ._errors import NoSuchTagError
from ._info import ProcessInfo
from ._seconds import seconds
from ._session import SIDECAR_DEFAULT_STOP_TIMEOUT, Session
from ._transport import REPLY_MARGIN

__all__ = ["Registry"]

# A Process (_process.py), which this module does not import.
Proc = Any


class Registry:
    """The Processes of ``session``'s tools; ``make(info)`` makes a new one."""

    def __init__(self, session: Session, make: Callable[[ProcessInfo], Proc]) -> None:
        self._session = session
        self._make = make
        self.reset()

    def reset(self) -> None:
        """Forget every Process (in a forked child: they belong to the parent's sidecar)."""
        self.lock = threading.Lock()
        #: The Process of each tag in use.
        self.current: Dict[str, Proc] = {}
        #: Every Process object still referenced, by (tag, pid) of each of its runs.
        self.objects: "weakref.WeakValueDictionary[tuple, Proc]" = weakref.WeakValueDictionary()
        self._stop_timeouts: Dict[str, float] = {}

    def adopt(self, info: ProcessInfo, register: bool) -> Proc:
        """The one Process object for (tag, pid), updated with ``info``.

        A later run of the tool now using the tag (a restart) belongs to that
        tool's Process too.  ``register``: ``info`` comes from the sidecar's
        view of the tag (create, fetch, list), so its Process holds the tag now.
        """
        with self.lock:
            key = (info.tag, info.pid)
            cur = self.current.get(info.tag)
            if cur is not None and cur._info is info and not cur._released:
                return cur  # the snapshot it already has (see snapshot): nothing to update
            if cur is not None and not cur._released and info.later_run_of(cur._info):
                cur._update(info)
                self.objects[key] = cur
                return cur
            proc = self.objects.get(key)
            if proc is None:
                proc = self._make(info)
                self.objects[key] = proc
            else:
                proc._update(info)
            if register:
                old = self.current.get(info.tag)
                if old is not None and old is not proc:
                    old._released = True
                self.current[info.tag] = proc
                proc._released = False
        return proc

    def snapshot(self, obj: Any) -> ProcessInfo:
        """ProcessInfo.from_json(obj), or the snapshot the tag's Process already
        holds when the sidecar sent exactly the same (a list() of tools that did
        not change since the last one costs a dict comparison per tool)."""
        if isinstance(obj, dict):
            tag = obj.get("tag")
            if type(tag) is str:
                cur = self.current.get(tag)
                if cur is not None:
                    info = cur._info
                    if info.raw == obj:
                        return info
        return ProcessInfo.from_json(obj)

    def tracks(self, tag: Any, pid: Any) -> bool:
        """A Process that a snapshot of (tag, pid) would update exists (reader thread).

        Otherwise adopt(register=False) would make a Process nobody holds.
        """
        if type(tag) is not str:
            return True  # let adopt deal with it
        if tag in self.current:
            return True
        return type(pid) is not int or (tag, pid) in self.objects

    def holder(self, tag: str) -> Optional[Proc]:
        """The Process that holds ``tag`` now, if any."""
        with self.lock:
            return self.current.get(tag)

    def check(self, proc: Proc) -> None:
        """Refuse to act on a Process whose tag was released or now names another tool."""
        self._session.own_process()
        if proc._generation != self._session.generation:
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
        with self.lock:
            cur = self.current.get(proc.tag)
        if cur is not None and cur is not proc:
            proc._released = True
            raise NoSuchTagError(
                "tag %r now names another process (pid %d, not %d)" % (proc.tag, cur.pid, proc.pid),
                tag=proc.tag,
            )

    def release(self, proc: Proc) -> None:
        """``proc``'s tag is free (stopped, or unknown to the sidecar)."""
        with self.lock:
            if self.current.get(proc.tag) is proc:
                del self.current[proc.tag]
                self._stop_timeouts.pop(proc.tag, None)
            proc._released = True

    def forget(self, tag: str) -> None:
        """The sidecar says ``tag`` is not in use: whatever held it is released."""
        with self.lock:
            old = self.current.pop(tag, None)
        if old is not None:
            old._released = True

    def release_all(self) -> Tuple[List[Proc], float]:
        """Take every tag away (shutdown): the Processes that held one, to be
        marked released once the sidecar stopped them, and the longest stop
        grace any of them has."""
        with self.lock:
            released = list(self.current.values())
            self.current.clear()
            grace = max(
                [SIDECAR_DEFAULT_STOP_TIMEOUT, self._session.stop_timeout or 0.0]
                + list(self._stop_timeouts.values())
            )
            self._stop_timeouts.clear()
        return released, grace

    def set_stop_timeout(self, tag: str, seconds: float) -> None:
        """``tag``'s tool was created with its own stop_timeout."""
        with self.lock:
            self._stop_timeouts[tag] = float(seconds)

    def stop_grace(self, tag: str) -> float:
        """How long the sidecar may take between the stop signal and SIGKILL for ``tag``."""
        with self.lock:
            t = self._stop_timeouts.get(tag)
        if t is None:
            t = self._session.stop_timeout
            if t is None:
                t = SIDECAR_DEFAULT_STOP_TIMEOUT
        return t

    def stop_request(self, tag: str, timeout: Optional[float]) -> Tuple[Dict[str, Any], float]:
        """A ``stop`` of ``tag``: its params and how long to wait for the reply
        (the stop grace -- ``timeout``, else the tag's -- plus REPLY_MARGIN).

        ``timeout`` (None: the tag's stop_timeout) is validated here:
        ValueError before anything is sent.
        """
        params: Dict[str, Any] = {"tag": tag}
        if timeout is None:
            grace = self.stop_grace(tag)
        else:
            seconds(timeout, "timeout", sent=True)
            params["timeout"] = timeout
            grace = timeout
        return params, grace + REPLY_MARGIN
