"""create's params and the one seconds validator, without a sidecar (issue 13).

_params.py is pure: what it needs of the sidecar (its hello features, the
environment it was started with) comes in as values, so every rule is checked
here on the dict that would be sent.
"""

from __future__ import annotations

import math
import os
import types
import unittest

from procmgr import OutputStream, ProcessManager, ProcMgrError, Ready, Restart, output_option
from procmgr._params import argv_list, create_params, environ_delta, host_environ
from procmgr._seconds import MAX_SECONDS, optional_seconds, seconds

ALL = frozenset({"capture", "stdin", "readiness", "restart", "state-events"})


def fake_sidecar() -> types.SimpleNamespace:
    """What create_params reads of a Sidecar: the environment it was started with, and the cache."""
    return types.SimpleNamespace(environ=dict(os.environ), env_cache=None)


def build(args=("tool",), output=output_option.DISCARD, features=ALL, sidecar=None, **kw):
    opts = dict(cwd=None, env=None, stop_timeout=None, clear_env=False, stdin=None, ready=None,
                restart=None, capture_size=None, capture_file=None, capture_file_max_bytes=None,
                capture_file_backups=None)
    opts.update(kw)
    params, ready, restart = create_params("t", list(args), output, features=features,
                                           sidecar=sidecar or fake_sidecar(), **opts)
    return types.SimpleNamespace(params=params, ready=ready, restart=restart)


class CreateParamsTest(unittest.TestCase):
    def test_defaults_send_only_what_the_sidecar_cannot_know(self):
        got = build()
        self.assertEqual(got.params, {"tag": "t", "argv": ["tool"], "stdout": "discard",
                                      "stderr": "discard", "cwd": os.getcwd()})
        self.assertIsNone(got.ready)
        self.assertIsNone(got.restart)

    def test_env_sends_only_the_difference_from_the_sidecars_environment(self):
        sc = fake_sidecar()
        sc.environ["PROCMGR_T_GONE"] = "x"  # the sidecar had it; the host has not
        got = build(sidecar=sc, env={"PROCMGR_T_NEW": "1", "PATH": os.environ.get("PATH", "")})
        self.assertEqual(got.params["env"], {"PROCMGR_T_NEW": "1", "PROCMGR_T_GONE": None})
        self.assertNotIn("inherit_env", got.params)

    def test_env_none_removes_a_variable(self):
        sc = fake_sidecar()
        sc.environ["PROCMGR_T_X"] = "1"
        os.environ["PROCMGR_T_X"] = "1"
        try:
            got = build(sidecar=sc, env={"PROCMGR_T_X": None})
        finally:
            del os.environ["PROCMGR_T_X"]
        self.assertEqual(got.params["env"], {"PROCMGR_T_X": None})

    def test_clear_env_sends_only_env(self):
        got = build(clear_env=True, env={"A": "1"})
        self.assertEqual(got.params["env"], {"A": "1"})
        self.assertIs(got.params["inherit_env"], False)

    def test_bad_env_is_refused(self):
        with self.assertRaisesRegex(ValueError, "bad environment variable name"):
            build(env={"A=B": "1"})
        with self.assertRaisesRegex(TypeError, "environment value of A"):
            build(env={"A": 1})

    def test_host_environ_is_cached_until_os_environ_changes(self):
        sc = fake_sidecar()
        first = host_environ(sc)
        self.assertIs(host_environ(sc)[0], first[0], "an unchanged os.environ must hit the cache")
        os.environ["PROCMGR_T_CACHE"] = "1"
        try:
            environ, delta = host_environ(sc)
        finally:
            del os.environ["PROCMGR_T_CACHE"]
        self.assertEqual((environ["PROCMGR_T_CACHE"], delta), ("1", {"PROCMGR_T_CACHE": "1"}))
        self.assertEqual(host_environ(sc)[1], {})

    def test_environ_delta(self):
        self.assertEqual(environ_delta({"A": "1", "B": "2"}, {"A": "1", "B": "3", "C": "4"}),
                         {"B": "3", "C": "4"})
        self.assertEqual(environ_delta({"A": "1"}, {}), {"A": None})

    def test_output(self):
        self.assertEqual(build(output=output_option.STDOUT).params["stdout"], "inherit")
        self.assertEqual(build(output=output_option.PIPE).params["stderr"], "capture")
        got = build(output="log.txt").params
        self.assertEqual((got["stdout"], got["stderr"]), ({"file": "log.txt", "append": True}, "stdout"))
        with self.assertRaisesRegex(ValueError, "output_option.PIPE"):
            build(output="PIPE")
        with self.assertRaisesRegex(ProcMgrError, "not supported by this sidecar"):
            build(output=output_option.PIPE, features=frozenset())
        with self.assertRaises(TypeError):
            build(output=3)

    def test_capture_options(self):
        got = build(output=output_option.PIPE, capture_size=4096, capture_file="out",
                    capture_file_max_bytes=100, capture_file_backups=0).params
        opts = {"size": 4096, "file_max_bytes": 100, "file_backups": 0}
        self.assertEqual(got["stdout"], {"capture": dict(opts, file="out")})
        self.assertEqual(got["stderr"], {"capture": dict(opts, file="out.stderr")})
        got = build(output=output_option.PIPE, capture_file=(None, "err")).params
        self.assertEqual((got["stdout"], got["stderr"]), ({"capture": {}}, {"capture": {"file": "err"}}))
        with self.assertRaisesRegex(ValueError, "need output=output_option.PIPE"):
            build(capture_size=4096)
        with self.assertRaisesRegex(ValueError, "capture_size must be an int"):
            build(output=output_option.PIPE, capture_size=0)

    def test_stdin(self):
        self.assertEqual(build(stdin=output_option.PIPE).params["stdin"], "pipe")
        self.assertNotIn("stdin", build(stdin=output_option.DISCARD).params)
        with self.assertRaisesRegex(ProcMgrError, "'stdin' feature"):
            build(stdin=output_option.PIPE, features=frozenset())
        with self.assertRaisesRegex(ValueError, "stdin must be None or output_option.PIPE"):
            build(stdin="file.txt")

    def test_ready_restart_and_stop_timeout(self):
        got = build(ready=Ready.tcp(8000, timeout=2), restart="on-failure", stop_timeout=1.5)
        self.assertEqual(got.params["ready"], Ready.tcp(8000, timeout=2).to_json())
        self.assertEqual(got.params["restart"], Restart("on-failure").to_json())
        self.assertEqual(got.params["stop_timeout"], 1.5)
        self.assertEqual((got.ready, got.restart), (Ready.tcp(8000, timeout=2), Restart("on-failure")))
        with self.assertRaisesRegex(ProcMgrError, "'readiness' feature"):
            build(ready=Ready.tcp(8000), features=frozenset())

    def test_cwd_is_made_absolute(self):
        self.assertEqual(build(cwd="sub").params["cwd"], os.path.abspath("sub"))

    def test_argv(self):
        self.assertEqual(argv_list("sleep 60"), ["sleep 60"])  # one executable, no shell
        self.assertEqual(argv_list(("a", b"b")), ["a", "b"])
        with self.assertRaisesRegex(ValueError, "must not be empty"):
            argv_list([])
        with self.assertRaisesRegex(TypeError, r"argv\[1\] must be a str"):
            argv_list(["a", 1])


class SecondsTest(unittest.TestCase):
    BAD = [math.nan, math.inf, -math.inf, -1, -0.5, True, "1", None]

    def test_the_validator(self):
        self.assertEqual(seconds(0, "t"), 0.0)  # 0 means zero
        self.assertEqual(seconds(1, "t"), 1.0)
        self.assertEqual(seconds(MAX_SECONDS + 1, "t"), MAX_SECONDS + 1)  # a client-side wait
        self.assertIsNone(optional_seconds(None, "t"))  # absent: the default
        for bad in self.BAD:
            with self.subTest(bad=bad), self.assertRaisesRegex(ValueError, "^t must be"):
                seconds(bad, "t")
        with self.assertRaisesRegex(ValueError, "at most 86400 seconds"):
            seconds(MAX_SECONDS + 1, "t", sent=True)

    def test_every_duration_goes_through_it(self):
        places = {
            "ProcessManager(stop_timeout=)": lambda v: ProcessManager(stop_timeout=v, _lazy=True),
            "Ready(timeout=)": lambda v: Ready.tcp(8000, timeout=v),
            "Restart(window=)": lambda v: Restart("always", window=v),
            "Restart(initial_backoff=)": lambda v: Restart("always", initial_backoff=v),
            "Restart(max_backoff=)": lambda v: Restart("always", max_backoff=v),
            "OutputStream(timeout=)": lambda v: OutputStream(None, "stdout", timeout=v),  # type: ignore[arg-type]
        }
        for where, make in places.items():
            for bad in (math.nan, math.inf, -1):
                with self.subTest(where=where, bad=bad), self.assertRaisesRegex(ValueError, "seconds"):
                    make(bad)
            make(0)  # 0 is zero, not refused
            make(None)  # absent is the default


if __name__ == "__main__":
    unittest.main()
