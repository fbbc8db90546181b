"""procmgr: start tagged helper tools from Python and be sure none outlives the session.

The CASA process-manager API on top of the ``procmgr`` sidecar (a small Go
program spoken to over JSON-RPC on stdin/stdout)::

    from procmgr import procmgr              # CASA: from casa_system import procmgr

    procmgr.create("terrific", ["/opt/local/bin/my-terrific-tool", "arg1", "arg2"])
    procmgr.running("terrific")              # True until stop(), even after a crash
    myproc = procmgr.fetch("terrific")       # a Process, or None
    myproc.is_alive()                        # the process exists right now
    myproc.stop()                            # whole process group, then the tag is free

``procmgr`` is a default ProcessManager whose sidecar starts on first use and
is shut down at interpreter exit.  If the host dies any other way (SIGKILL,
segfault, OOM), the sidecar notices and stops every tool.

Supervisor-grade features: ``output=output_option.PIPE`` captures output
(``Process.read_output``, ``Process.stdout``, ``Process.wait_for_output``),
``ready=Ready.output(...)``/``path``/``tcp`` waits until a tool is ready,
``restart=Restart(...)`` brings a crashed tool back with backoff,
``stdin=output_option.PIPE`` with ``Process.write_stdin``, and
``manager.on_state(callback)`` hears every state change.

Errors are raised, never printed: TagInUseError, NoSuchTagError, SpawnError,
SidecarError, NotReadyError, ProcMgrTimeoutError, OutputEndedError, all
subclasses of ProcMgrError.
"""

from __future__ import annotations

from ._errors import (
    NoSuchTagError,
    NotReadyError,
    OutputEndedError,
    ProcMgrError,
    ProcMgrTimeoutError,
    SidecarError,
    SpawnError,
    TagInUseError,
)
from ._info import ProcessInfo, output_option
from ._manager import Process, ProcessManager
from ._options import Ready, Restart
from ._output import OutputChunk, OutputStream
from ._stats import ProcessStats, ProcessTable, TableRow

__all__ = [
    "procmgr",
    "ProcessManager",
    "Process",
    "ProcessInfo",
    "output_option",
    "Ready",
    "Restart",
    "OutputChunk",
    "OutputStream",
    "ProcessStats",
    "ProcessTable",
    "TableRow",
    "ProcMgrError",
    "TagInUseError",
    "NoSuchTagError",
    "SpawnError",
    "SidecarError",
    "NotReadyError",
    "ProcMgrTimeoutError",
    "OutputEndedError",
]

__version__ = "0.1.0"

#: The default manager (CASA's ``casa_system.procmgr``).  Its sidecar starts on
#: first use, found as ProcessManager finds it (_binary.py).  In a child made by
#: os.fork() it starts a fresh sidecar of the child's own on first use.
procmgr: ProcessManager = ProcessManager(_lazy=True)
