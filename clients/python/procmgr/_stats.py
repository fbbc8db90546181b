"""What each tool costs: the results of Process.stats() and ProcessManager.table(), and their displays.

The calls themselves are the Process's and the manager's; this module only
shapes and renders what they got.  The figures are the sidecar's ``stats`` (docs/protocol.md): a tool's whole
tree, the main process with every descendant the sidecar attributes to it.
A table renders as aligned text (``print(procmgr.table())``) and, in
Jupyter, as an HTML table (``_repr_html_``: escaped, no JavaScript).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union, overload

from ._info import ProcessInfo

__all__ = [
    "ProcessStats", "TableRow", "ProcessTable", "format_bytes", "format_seconds", "row_html", "plain_html",
]


@dataclass(frozen=True)
class ProcessStats:
    """What a tool's whole tree costs, as the sidecar sampled it.

    ``processes``: live members (the main process and its attributed
    descendants); 0 once none is left.
    ``threads``: their threads.
    ``cpu_seconds``: user + system CPU seconds of the current run: the live
    members' and what its reaped members used. It never decreases within a run.
    ``rss_bytes``: resident memory summed over live members (a page shared by
    two members counts twice).
    ``pss_bytes``: proportional set size: shared pages split between their
    sharers, so the sum does not double-count. None when some member's
    figure cannot be read.
    ``uptime``: seconds since the current run started (for a finished run,
    how long it lasted).
    ``pids``: the live members, the main process first.

    For a tool that is not running, ``processes`` is 0, ``cpu_seconds`` the
    last run's total and ``rss_bytes``/``pss_bytes`` the last figures seen
    while it ran (None if it was never sampled). On macOS ``threads``,
    ``rss_bytes`` and ``pss_bytes`` are None, and ``cpu_seconds`` is None
    while members live.
    """

    processes: int
    threads: Optional[int]
    cpu_seconds: Optional[float]
    rss_bytes: Optional[int]
    pss_bytes: Optional[int]
    uptime: float
    pids: Tuple[int, ...]

    @classmethod
    def from_json(cls, obj: Any) -> "ProcessStats":
        if not isinstance(obj, dict):
            raise ValueError("stats must be a JSON object, got %r" % (obj,))
        return cls(
            processes=int(obj.get("processes") or 0),
            threads=_opt_int(obj.get("threads")),
            cpu_seconds=_opt_float(obj.get("cpu_seconds")),
            rss_bytes=_opt_int(obj.get("rss_bytes")),
            pss_bytes=_opt_int(obj.get("pss_bytes")),
            uptime=float(obj.get("uptime") or 0.0),
            pids=tuple(int(p) for p in obj.get("pids") or ()),
        )

    def __str__(self) -> str:
        return "processes %d, threads %s, cpu %s, rss %s, pss %s, uptime %s" % (
            self.processes,
            "-" if self.threads is None else self.threads,
            format_cpu(self.cpu_seconds),
            format_bytes(self.rss_bytes),
            format_bytes(self.pss_bytes),
            format_seconds(self.uptime),
        )


class TableRow(NamedTuple):
    """One tool in ``ProcessManager.table()``; sizes in bytes, times in seconds."""

    tag: str
    pid: int
    state: str
    uptime: float
    restarts: int
    processes: int
    cpu_seconds: Optional[float]
    rss: Optional[int]

    @classmethod
    def of(cls, info: ProcessInfo, stats: ProcessStats) -> "TableRow":
        return cls(info.tag, info.pid, info.state, stats.uptime, info.restarts,
                   stats.processes, stats.cpu_seconds, stats.rss_bytes)


_HEADERS = ("TAG", "PID", "STATE", "UPTIME", "RESTARTS", "PROCS", "CPU", "RSS")
_NUMERIC = (False, True, False, True, True, True, True, True)


class ProcessTable(Sequence[TableRow]):
    """The session's tools with what each costs: a sequence of TableRow.

    ``str(table)`` (and ``repr``) is an aligned text table; in Jupyter it
    shows as an HTML table. Sizes are in KiB/MiB/GiB there, the rows keep bytes.
    """

    def __init__(self, rows: Sequence[TableRow]) -> None:
        self._rows: Tuple[TableRow, ...] = tuple(rows)

    @overload
    def __getitem__(self, i: int) -> TableRow: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[TableRow]: ...

    def __getitem__(self, i: Union[int, slice]) -> Union[TableRow, Sequence[TableRow]]:
        return self._rows[i]

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[TableRow]:
        return iter(self._rows)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ProcessTable):
            return self._rows == other._rows
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def cells(self) -> List[Tuple[str, ...]]:
        """The rows as displayed: every value formatted."""
        return [_cells(r) for r in self._rows]

    def __str__(self) -> str:
        return render_text(self.cells())

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return render_html(self.cells(), caption="%d tool%s" % (len(self), "" if len(self) == 1 else "s"))


# -- formatting -----------------------------------------------------------------


def format_bytes(n: Optional[int]) -> str:
    """``1536`` → ``"1.5 KiB"``; None → ``"-"``."""
    if n is None:
        return "-"
    if n < 1024:
        return "%d B" % n
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024.0
        if value < 1024.0 or unit == "TiB":
            return "%.1f %s" % (value, unit)
    raise AssertionError("unreachable")  # pragma: no cover


def format_seconds(s: Optional[float]) -> str:
    """A duration the way ps shows one: ``"4.2s"``, ``"5m03s"``, ``"2h05m"``, ``"3d04h"``."""
    if s is None:
        return "-"
    if s < 60:
        return "%.1fs" % s
    n = int(s)
    if n < 3600:
        return "%dm%02ds" % (n // 60, n % 60)
    if n < 86400:
        return "%dh%02dm" % (n // 3600, n % 3600 // 60)
    return "%dd%02dh" % (n // 86400, n % 86400 // 3600)


def format_cpu(s: Optional[float]) -> str:
    return "-" if s is None else "%.2fs" % s


def _cells(r: TableRow) -> Tuple[str, ...]:
    return (r.tag, str(r.pid), r.state, format_seconds(r.uptime), str(r.restarts),
            str(r.processes), format_cpu(r.cpu_seconds), format_bytes(r.rss))


def render_text(rows: Sequence[Tuple[str, ...]]) -> str:
    """An aligned table: text columns to the left, numbers to the right."""
    widths = [len(h) for h in _HEADERS]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, _NUMERIC)]
        return "  ".join(out).rstrip()

    return "\n".join([line(_HEADERS)] + [line(r) for r in rows])


def render_html(rows: Sequence[Tuple[str, ...]], caption: str = "") -> str:
    """An HTML table (no script; every value escaped)."""
    right = ' style="text-align:right"'
    parts = ['<table class="procmgr">']
    if caption:
        parts.append("<caption>%s</caption>" % html.escape(caption))
    parts.append("<thead><tr>")
    for h, num in zip(_HEADERS, _NUMERIC):
        parts.append("<th%s>%s</th>" % (right if num else "", html.escape(h.lower())))
    parts.append("</tr></thead><tbody>")
    for row in rows:
        parts.append("<tr>")
        for c, num in zip(row, _NUMERIC):
            parts.append("<td%s>%s</td>" % (right if num else "", html.escape(c)))
        parts.append("</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def plain_html(text: str) -> str:
    """``text`` (a repr, an error) as escaped, preformatted HTML."""
    return "<pre>%s</pre>" % html.escape(text)


def row_html(info: ProcessInfo, stats: ProcessStats) -> str:
    """``Process._repr_html_``: a one-row table of the tool."""
    return render_html([_cells(TableRow.of(info, stats))])


def _opt_int(v: Any) -> Optional[int]:
    return None if v is None else int(v)


def _opt_float(v: Any) -> Optional[float]:
    return None if v is None else float(v)
