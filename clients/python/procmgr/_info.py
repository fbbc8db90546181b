"""Plain data types: ProcessInfo snapshots and the output_option enum."""

from __future__ import annotations

import datetime
import enum
import re
import signal as _signal
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

__all__ = ["ProcessInfo", "output_option", "returncode_of", "signal_number"]


class output_option(enum.Enum):
    """Where a tool's stdout and stderr go (named like CASA's enum).

    * ``DISCARD`` -- /dev/null (the default).
    * ``STDOUT`` -- the host's own stdout and stderr (its terminal, or whatever
      the host's fds 1 and 2 were when the manager started).  The tool never
      writes into the protocol stream.
    * ``PIPE`` -- captured by the sidecar: stdout and stderr are each kept in
      a ring buffer (1 MiB unless ``capture_size=`` says otherwise), read with
      ``Process.read_output``, ``Process.stdout``/``stderr`` and
      ``Process.wait_for_output``.  As ``create(..., stdin=PIPE)`` it gives the
      tool a stdin pipe fed by ``Process.write_stdin``.  Needs a sidecar that
      announces the "capture" (or "stdin") feature; otherwise ``create``
      raises ProcMgrError.
    """

    PIPE = "pipe"
    STDOUT = "stdout"
    DISCARD = "discard"


_RFC3339 = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)$"
)


# Parsed timestamps by their text: a tool's started_at comes back in every
# list/fetch/event about it, and parsing is most of a snapshot's cost.  datetime
# objects are immutable, so sharing them is safe; the dict is cleared when full.
_TIME_CACHE: Dict[str, Optional[datetime.datetime]] = {}
_TIME_CACHE_MAX = 8192


def _parse_time(value: Any) -> Optional[datetime.datetime]:
    """Parse an RFC 3339 timestamp as Go writes it (up to 9 fraction digits)."""
    if type(value) is not str:
        if not isinstance(value, str):
            return None
        value = str(value)
    try:
        return _TIME_CACHE[value]
    except KeyError:
        pass
    parsed = _parse_time_text(value)
    if len(_TIME_CACHE) >= _TIME_CACHE_MAX:
        _TIME_CACHE.clear()
    _TIME_CACHE[value] = parsed
    return parsed


def _parse_time_text(value: str) -> Optional[datetime.datetime]:
    m = _RFC3339.match(value)
    if not m:
        return None
    year, month, day, hour, minute, second, frac, zone = m.groups()
    micro = int((frac + "000000")[:6]) if frac else 0
    try:
        if zone == "Z" or zone == "z":
            tz = datetime.timezone.utc
        else:
            sign = 1 if zone[0] == "+" else -1
            tz = datetime.timezone(
                sign * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
            )
        return datetime.datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz
        )
    except ValueError:  # no such date, or an offset of 24 h or more
        return None


def signal_number(name: Any) -> Optional[int]:
    """"SIGKILL" -> 9 (also accepts "KILL" and plain numbers); None if unknown."""
    if isinstance(name, bool):
        return None
    if isinstance(name, int):
        return name
    if not isinstance(name, str) or not name:
        return None
    if name.isdigit():
        return int(name)
    key = name.upper()
    if not key.startswith("SIG"):
        key = "SIG" + key
    try:
        return int(_signal.Signals[key])
    except KeyError:
        return None


def returncode_of(exit_code: Any, signal_name: Any) -> Optional[int]:
    """subprocess-style return code: the exit status, or -N when killed by signal N."""
    if isinstance(exit_code, int) and not isinstance(exit_code, bool):
        return exit_code
    num = signal_number(signal_name)
    if num is not None:
        return -num
    return None


_STATE_RANK = {"running": 0, "stopping": 1, "exited": 2, "fatal": 3}


@dataclass(frozen=True)
class ProcessInfo:
    """A snapshot of one tool, as the sidecar reported it.

    ``returncode`` follows subprocess: None while the tool runs, its exit
    status once it exited, or minus the signal number when a signal killed it.
    ``state`` is "running", "stopping", "exited" or "fatal" (its restart
    policy gave up); ``pid``, ``started_at``, ``exit_code``... describe the
    current (or last) run, and ``restarts`` counts the runs the restart
    policy started.  ``orphans`` counts the processes of the tool's tree that
    the sidecar adopted (their parent exited); they go with its ``stop()``.
    """

    tag: str
    pid: int
    argv: Tuple[str, ...]
    pgid: int
    state: str
    alive: bool
    exit_code: Optional[int]
    signal: Optional[str]
    started_at: Optional[datetime.datetime]
    exited_at: Optional[datetime.datetime]
    restarts: int = 0
    orphans: int = 0
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, obj: Any) -> "ProcessInfo":
        if not isinstance(obj, dict):
            raise ValueError("ProcessInfo must be a JSON object, got %r" % (obj,))
        # The hot path of list() (one call per tool): the same conversions as
        # the generated __init__ would get, without its per-field
        # object.__setattr__ (the class is frozen).
        get = obj.get
        tag = get("tag", "")
        state = get("state", "")
        argv = get("argv") or ()
        self = object.__new__(cls)
        self.__dict__.update(
            tag=tag if type(tag) is str else str(tag),
            pid=int(get("pid") or 0),
            argv=tuple(map(str, argv)),
            pgid=int(get("pgid") or 0),
            state=state if type(state) is str else str(state),
            alive=bool(get("alive", False)),
            exit_code=get("exit_code"),
            signal=get("signal"),
            started_at=_parse_time(get("started_at")),
            exited_at=_parse_time(get("exited_at")),
            restarts=_int(get("restarts")),
            orphans=_int(get("orphans")),
            raw=dict(obj),
        )
        return self

    @property
    def exited(self) -> bool:
        """The main process exited (state "exited" or "fatal")."""
        return self.state in ("exited", "fatal")

    @property
    def fatal(self) -> bool:
        """The restart policy gave up: the tool kept failing."""
        return self.state == "fatal"

    @property
    def returncode(self) -> Optional[int]:
        return returncode_of(self.exit_code, self.signal)

    def newer_than(self, other: "ProcessInfo") -> bool:
        """True if this snapshot is at least as far along the life cycle as ``other``.

        A later run (more restarts) is newer; within one run, the state decides.
        """
        if self.restarts != other.restarts:
            return self.restarts > other.restarts
        return _STATE_RANK.get(self.state, -1) >= _STATE_RANK.get(other.state, -1)

    def later_run_of(self, other: "ProcessInfo") -> bool:
        """True if this snapshot is a run its restart policy started after ``other``'s run.

        (A tag that was stopped and created again starts over at 0 restarts,
        and its runs all started after the old tool's.)
        """
        if self.restarts <= other.restarts:
            return False
        if self.started_at is None or other.started_at is None:
            return True
        return self.started_at >= other.started_at


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return value
