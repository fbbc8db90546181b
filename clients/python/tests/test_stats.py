"""What each tool costs (issue 15): Process.stats(), ProcessManager.table()
and their text and HTML displays.

Figures are checked against /proc (VmRSS, utime + stime, process groups),
never only against what the sidecar says.
"""

from __future__ import annotations

import html.parser
import os
import tempfile
import textwrap
import unittest
from typing import List, Optional, Tuple

from . import support
from .support import ManagerTestCase

from procmgr import NoSuchTagError, ProcessManager, ProcessStats, ProcessTable, Ready, TableRow
from procmgr._stats import format_bytes, format_seconds

MIB = 1 << 20


def status_kb(pid: int, key: str) -> int:
    """A "<key>: <n> kB" line of /proc/<pid>/status."""
    for line in support.read_file("/proc/%d/status" % pid).splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError("no %s in /proc/%d/status" % (key, pid))


def cpu_seconds(pid: int) -> float:
    """utime + stime of /proc/<pid>/stat (USER_HZ is 100)."""
    data = support.read_file("/proc/%d/stat" % pid)
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def live_group(pgid: int) -> List[int]:
    """The live pids of process group pgid, from /proc."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = support.stat(int(name))
            if st and st["pgrp"] == pgid and st["state"] not in ("Z", "X", "x"):
                out.append(int(name))
    return sorted(out)


class WellFormed(html.parser.HTMLParser):
    """Fails on an end tag that does not close the innermost open element,
    records every start tag and all text."""

    VOID = {"br", "hr", "img", "meta", "link", "input", "col", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: List[str] = []
        self.starts: List[str] = []
        self.text: List[str] = []
        self.errors: List[str] = []

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        self.starts.append(tag)
        for name, _ in attrs:
            if name.lower().startswith("on"):
                self.errors.append("event handler attribute %s on <%s>" % (name, tag))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append("</%s> closes %r" % (tag, self.stack[-1:] or "nothing"))
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @classmethod
    def check(cls, tc: unittest.TestCase, markup: str) -> "WellFormed":
        p = cls()
        p.feed(markup)
        p.close()
        tc.assertEqual(p.errors, [], markup)
        tc.assertEqual(p.stack, [], "elements left open in %s" % markup)
        tc.assertNotIn("script", p.starts, markup)
        return p


class StatsTest(ManagerTestCase):
    def await_stats(self, proc, what: str, pred) -> ProcessStats:
        last = [None]

        def ok() -> bool:
            last[0] = proc.stats()
            return pred(last[0])

        self.assertTrue(support.wait_until(ok), "waited for %s; last stats %s" % (what, last[0]))
        return last[0]

    def await_cpu(self, pids, want: float) -> float:
        got = [0.0]

        def ok() -> bool:
            got[0] = sum(cpu_seconds(p) for p in pids)
            return got[0] >= want

        self.assertTrue(support.wait_until(ok), "%s used %.2f s of CPU; awaited %.2f" % (pids, got[0], want))
        return got[0]

    def test_child_touching_100_mib_shows_in_rss_and_processes(self):
        d = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, d)
        ready = os.path.join(d, "touched")
        self.addCleanup(lambda: os.path.exists(ready) and os.unlink(ready))
        child = textwrap.dedent(
            """
            import sys, time
            b = bytearray(100 << 20)
            for i in range(0, len(b), 4096):
                b[i] = 1
            open(sys.argv[1], "w").close()
            time.sleep(600)
            """
        )
        parent = "import subprocess, sys; subprocess.run([sys.executable, '-c', %r, %r])" % (child, ready)
        p = self.pm.create(self.tag(), [support.PYTHON, "-c", parent], ready=Ready.path(ready, timeout=60))
        s = p.stats()
        self.assertIsInstance(s, ProcessStats)
        self.assertGreaterEqual(s.processes, 2, s)
        self.assertEqual(s.processes, len(s.pids))
        self.assertEqual(s.pids[0], p.pid, "main process first")
        self.assertEqual(sorted(s.pids), live_group(p.info().pgid))
        self.assertIsNotNone(s.rss_bytes)
        self.assertGreaterEqual(s.rss_bytes, 100 * MIB, s)
        proc_rss = sum(status_kb(pid, "VmRSS") << 10 for pid in s.pids)
        self.assertLess(abs(s.rss_bytes - proc_rss), 8 * MIB,
                        "rss_bytes %d, /proc VmRSS of %s sums to %d" % (s.rss_bytes, s.pids, proc_rss))
        self.assertIsNotNone(s.pss_bytes)
        self.assertGreaterEqual(s.pss_bytes, 99 * MIB)
        self.assertLessEqual(s.pss_bytes, s.rss_bytes + MIB)
        self.assertGreaterEqual(s.threads, 2)
        self.assertGreater(s.uptime, 0)

    def test_cpu_bound_tool_cpu_seconds_grow(self):
        p = self.pm.create(self.tag(), ["/bin/sh", "-c", "while :; do :; done"])
        before = cpu_seconds(p.pid)
        s = p.stats()
        after = cpu_seconds(p.pid)
        self.assertTrue(before - 0.001 <= s.cpu_seconds <= after + 0.001,
                        "cpu_seconds %s, /proc said %.2f then %.2f" % (s.cpu_seconds, before, after))
        first = s.cpu_seconds
        self.await_stats(p, "cpu_seconds to grow by 0.05", lambda s: s.cpu_seconds >= first + 0.05)

    def test_after_exit_processes_zero_and_last_totals(self):
        d = tempfile.mkdtemp()
        flag = os.path.join(d, "done")
        self.addCleanup(os.rmdir, d)
        self.addCleanup(lambda: os.path.exists(flag) and os.unlink(flag))
        loop = 'while [ ! -e "$F" ]; do :; done'
        p = self.pm.create(self.tag(), ["/bin/sh", "-c", "/bin/sh -c '%s' & %s; wait" % (loop, loop)],
                           env={"F": flag})
        seen = self.await_stats(p, "two busy processes", lambda s: s.processes == 2 and s.cpu_seconds >= 0.1)
        burnt = self.await_cpu(seen.pids, seen.cpu_seconds + 0.05)
        open(flag, "w").close()
        self.assertEqual(p.wait(timeout=support.DEADLINE), 0)
        self.assertEqual(live_group(p.info().pgid), [])
        done = p.stats()
        self.assertEqual(done.processes, 0)
        self.assertEqual(done.pids, ())
        self.assertGreaterEqual(done.cpu_seconds, burnt, "the run's total, the waited-for child included")
        self.assertEqual(p.stats().uptime, done.uptime, "a finished run's uptime stays")

    def test_unknown_or_released_tag_is_no_such_tag(self):
        with self.assertRaises(NoSuchTagError) as cm:
            self.pm._session.call("stats", {"tag": "nope"})
        self.assertEqual(cm.exception.code, -32002)
        p = self.pm.create(self.tag(), ["/bin/sleep", "1000"])
        p.stop()
        with self.assertRaises(NoSuchTagError):
            p.stats()

    def test_table_has_a_row_per_tool_with_figures_matching_proc(self):
        a = self.pm.create("a" + self.tag(), ["/bin/sh", "-c", "/bin/sleep 1000 & exec /bin/sleep 1000"])
        b = self.pm.create("b" + self.tag(), ["/bin/sleep", "1000"])
        self.assertTrue(support.wait_until(lambda: len(live_group(a.pid)) == 2))
        t = self.pm.table()
        self.assertIsInstance(t, ProcessTable)
        self.assertEqual([r.tag for r in t], [a.tag, b.tag])
        for row, proc in zip(t, (a, b)):
            self.assertIsInstance(row, TableRow)
            self.assertEqual(row._fields, ("tag", "pid", "state", "uptime", "restarts",
                                           "processes", "cpu_seconds", "rss"))
            self.assertEqual(row.pid, proc.pid)
            self.assertEqual(row.state, "running")
            self.assertEqual(row.restarts, 0)
            group = live_group(proc.pid)
            self.assertEqual(row.processes, len(group))
            proc_rss = sum(status_kb(pid, "VmRSS") << 10 for pid in group)
            self.assertLess(abs(row.rss - proc_rss), 4 * MIB, (row, proc_rss))
            self.assertIsNotNone(row.cpu_seconds)
        # The text table: a header and one line per tool, columns aligned.
        lines = str(t).splitlines()
        self.assertEqual(len(lines), 3, str(t))
        header = lines[0]
        self.assertEqual(header.split(), ["TAG", "PID", "STATE", "UPTIME", "RESTARTS", "PROCS", "CPU", "RSS"])
        pid_end = header.index("PID") + len("PID")
        state_start = header.index("STATE")
        for line, row in zip(lines[1:], t):
            self.assertEqual(line[:pid_end].split()[-1], str(row.pid), "pid right-aligned under PID:\n" + str(t))
            self.assertEqual(line[state_start:].split()[0], "running", "state under STATE:\n" + str(t))
            self.assertTrue(line.endswith(format_bytes(row.rss)), line)
            self.assertRegex(line, r"\d\.\d (KiB|MiB|GiB)$")
        self.assertEqual(repr(t), str(t))

    def test_html_is_well_formed_and_escapes_tags(self):
        p = self.pm.create("<b>bold</b> & co", ["/bin/sleep", "1000"])
        for markup in (self.pm._repr_html_(), self.pm.table()._repr_html_(), p._repr_html_()):
            parsed = WellFormed.check(self, markup)
            self.assertNotIn("b", parsed.starts, "the tag's <b> was not escaped: " + markup)
            self.assertIn("<b>bold</b> & co", "".join(parsed.text))
            self.assertIn("table", parsed.starts)
            self.assertIn(str(p.pid), "".join(parsed.text))
        p.stop()
        WellFormed.check(self, p._repr_html_())  # a released Process: its repr, escaped

    def test_html_of_a_manager_without_sidecar_starts_none(self):
        lazy = ProcessManager(_lazy=True)
        markup = lazy._repr_html_()
        WellFormed.check(self, markup)
        self.assertIsNone(lazy._sidecar, "displaying the manager started a sidecar")
        self.pm.shutdown()
        WellFormed.check(self, self.pm._repr_html_())


class FormatTest(unittest.TestCase):
    def test_sizes_in_binary_units(self):
        self.assertEqual(format_bytes(None), "-")
        self.assertEqual(format_bytes(0), "0 B")
        self.assertEqual(format_bytes(1023), "1023 B")
        self.assertEqual(format_bytes(1536), "1.5 KiB")
        self.assertEqual(format_bytes(100 * MIB), "100.0 MiB")
        self.assertEqual(format_bytes(3 << 30), "3.0 GiB")
        self.assertEqual(format_bytes(5 << 40), "5.0 TiB")

    def test_durations(self):
        self.assertEqual(format_seconds(4.25), "4.2s")
        self.assertEqual(format_seconds(303), "5m03s")
        self.assertEqual(format_seconds(2 * 3600 + 5 * 60), "2h05m")
        self.assertEqual(format_seconds(3 * 86400 + 4 * 3600), "3d04h")

    def test_table_text_without_tools_is_the_header(self):
        self.assertEqual(str(ProcessTable([])).split(), ["TAG", "PID", "STATE", "UPTIME", "RESTARTS",
                                                         "PROCS", "CPU", "RSS"])


if __name__ == "__main__":
    unittest.main()
