"""Building ``create``'s params from its Python arguments.

Nothing here talks to the sidecar.  What this needs to know of it comes in
as values -- the features it announced in hello, and the environment it was
started with -- so every rule is unit-tested without one
(tests/test_params.py).  The one side effect: host_environ keeps its cache of
the host's environment on the Sidecar object (``env_cache``).

Every mistake in the arguments raises ValueError or TypeError naming the
argument at fault; asking for what the sidecar lacks (``require``: stdin,
readiness, restart; output_option.PIPE without capture) raises ProcMgrError.
Either way before anything is sent.
"""

from __future__ import annotations

import os
import shlex
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ._errors import ProcMgrError
from ._info import output_option
from ._options import Ready, Restart, ready_params, restart_params
from ._output import STREAMS

__all__ = [
    "create_params",
    "argv_list",
    "split_hint",
    "str_path",
    "environ_delta",
    "host_environ",
    "require",
    "MAX_CAPTURE_SIZE",
]

#: The largest ring the sidecar accepts for a captured stream.
MAX_CAPTURE_SIZE = 256 << 20


def create_params(
    tag: str,
    args: List[str],
    output: Any,
    *,
    cwd: Any,
    env: Optional[Mapping[str, Optional[str]]],
    stop_timeout: Optional[float],
    clear_env: bool,
    stdin: Any,
    ready: Any,
    restart: Any,
    capture_size: Any,
    capture_file: Any,
    capture_file_max_bytes: Any,
    capture_file_backups: Any,
    features: frozenset,
    sidecar: Any,
) -> Tuple[Dict[str, Any], Optional[Ready], Optional[Restart]]:
    """``create``'s params for ``tag`` and ``args`` (see argv_list), as
    ProcessManager.create documents them, with the Ready and Restart made of
    ``ready`` and ``restart`` (None when not given).  A plain tuple: this is
    the create path, measured in bench/clientcost.py.

    ``stop_timeout``: already checked (seconds).  ``features``: the
    sidecar's hello features.  ``sidecar``: has ``environ`` (the environment
    the sidecar was started with) and ``env_cache`` (see host_environ).
    """
    params: Dict[str, Any] = {"tag": tag, "argv": args}
    capture = _capture_options(
        output, capture_size, capture_file, capture_file_max_bytes, capture_file_backups
    )
    params.update(_output_params(output, features, capture))
    params["cwd"] = os.path.abspath(str_path(cwd, "cwd")) if cwd is not None else os.getcwd()
    if stdin is not None and stdin is not output_option.DISCARD and stdin != "null":
        if stdin is output_option.PIPE or stdin == "pipe" or stdin is True:
            require(features, "stdin", "a stdin pipe (stdin=output_option.PIPE)")
            params["stdin"] = "pipe"
        else:
            raise ValueError("stdin must be None or output_option.PIPE, not %r" % (stdin,))
    ready_spec = None
    if ready is not None:
        ready_spec = ready_params(ready)
        require(features, "readiness", "readiness conditions (ready=)")
        params["ready"] = ready_spec.to_json()
    restart_spec = None
    if restart is not None:
        restart_spec = restart_params(restart)
        require(features, "restart", "restart policies (restart=)")
        params["restart"] = restart_spec.to_json()
    delta: Dict[str, Optional[str]] = {}
    environ: Dict[str, str] = {}
    if not clear_env:
        environ, delta = host_environ(sidecar)
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
            delta = environ_delta(sidecar.environ, environ)
        if delta:
            params["env"] = dict(delta)
    if stop_timeout is not None:
        params["stop_timeout"] = stop_timeout
    return params, ready_spec, restart_spec


def environ_delta(base: Mapping[str, str], environ: Mapping[str, str]) -> Dict[str, Optional[str]]:
    """How ``environ`` differs from ``base``: changed or new values, None for removed."""
    delta: Dict[str, Optional[str]] = {k: v for k, v in environ.items() if base.get(k) != v}
    delta.update({k: None for k in base if k not in environ})
    return delta


def host_environ(sidecar: Any) -> "tuple[Dict[str, str], Dict[str, Optional[str]]]":
    """The host's os.environ now and its difference from ``sidecar.environ`` (do not mutate either).

    Decoding all of os.environ and diffing it cost ~45 µs per create (38
    variables); both are kept in ``sidecar.env_cache`` with a copy of
    os.environ's encoded mapping (``_data``, which every change through
    os.environ updates) and recomputed only when that no longer compares
    equal (~0.5 µs).  os.putenv() bypasses os.environ, here as before.
    """
    data = getattr(os.environ, "_data", None)
    cache = sidecar.env_cache
    if cache is not None and cache[0] == data:
        return cache[1], cache[2]
    decodekey = getattr(os.environ, "decodekey", None)
    decodevalue = getattr(os.environ, "decodevalue", None)
    if type(data) is not dict or decodekey is None or decodevalue is None:
        environ = dict(os.environ)  # not CPython's os._Environ: no caching
        return environ, environ_delta(sidecar.environ, environ)
    snap = dict(data)
    # Decoded from the same snapshot the cache is keyed by, so a change made
    # by another thread meanwhile cannot slip in unnoticed.
    environ = {decodekey(k): decodevalue(v) for k, v in snap.items()}
    delta = environ_delta(sidecar.environ, environ)
    sidecar.env_cache = (snap, environ, delta)
    return environ, delta


def require(features: frozenset, feature: str, what: str) -> None:
    """ProcMgrError unless the sidecar announced ``feature`` (``what`` needs it)."""
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
            paths = [None if f is None else str_path(f, "capture_file") for f in file]
        else:
            base = str_path(file, "capture_file")
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
        path = str_path(output, "output")
        return {"stdout": {"file": path, "append": True}, "stderr": "stdout"}
    raise TypeError("output must be an output_option or a file path, not %r" % (output,))


def argv_list(argv: Any) -> List[str]:
    """create's argv as a list of str; a mistake names the item at fault."""
    if isinstance(argv, (str, bytes)) or hasattr(argv, "__fspath__"):
        return [str_path(argv, "argv")]
    if not isinstance(argv, (list, tuple)) and not hasattr(argv, "__iter__"):
        raise TypeError("argv must be a list of str, not %s" % type(argv).__name__)
    args = []
    for i, a in enumerate(argv):
        if not isinstance(a, (str, bytes)) and not hasattr(a, "__fspath__"):
            raise TypeError(
                "argv[%d] must be a str (or a path), not %s: %r" % (i, type(a).__name__, a)
            )
        args.append(str_path(a, "argv[%d]" % i))
    if not args:
        raise ValueError("argv must not be empty")
    return args


def split_hint(argv: str) -> List[str]:
    """The list a str argv with spaces was probably meant to be (for a hint)."""
    try:
        return shlex.split(argv)
    except ValueError:
        return argv.split()


def str_path(value: Any, what: str) -> str:
    """``value`` (str, bytes or os.PathLike) as a str, or TypeError naming ``what``."""
    value = os.fspath(value)
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    if not isinstance(value, str):
        raise TypeError("%s must be str or a path, not %r" % (what, value))
    return value
