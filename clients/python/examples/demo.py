#!/usr/bin/env python3
"""procmgr demo: the life cycle of a few tools, then a host killed with SIGKILL.

Run it from a fresh clone with `make demo` (which builds the sidecar), or:

    go build -o bin/procmgr .
    PYTHONPATH=clients/python PROCMGR_BIN=$PWD/bin/procmgr python3 clients/python/examples/demo.py

Everything it claims about processes is read from /proc, not from procmgr.
It exits non-zero if any process survives that should not.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(CLIENT))
sys.path.insert(0, CLIENT)
if not os.environ.get("PROCMGR_BIN") and os.path.exists(os.path.join(REPO, "bin", "procmgr")):
    os.environ["PROCMGR_BIN"] = os.path.join(REPO, "bin", "procmgr")

from procmgr import procmgr  # noqa: E402  (CASA: from casa_system import procmgr)

failures = []

#: Stands in for the CASA page's ["/opt/local/bin/my-terrific-tool", "arg1", "arg2"].
TERRIFIC = ["sleep", "600"]


# -- reading the truth from /proc ------------------------------------------------


def proc_state(pid):
    """The process's state letter from /proc (R, S, Z, ...), or None if it does not exist."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def is_running(pid):
    return proc_state(pid) not in (None, "Z", "X")


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def wait_for(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


def show(label, pid):
    state = proc_state(pid)
    if state is None:
        text = "gone"
    elif state in ("Z", "X"):
        text = "exited (a zombie until its new parent reaps it)"
    else:
        text = "running (%s)" % state
    print("    %-28s pid %-7d /proc: %s" % (label, pid, text))


def expect(ok, what):
    if not ok:
        failures.append(what)
        print("    !! FAILED: %s" % what)


def step(n, title):
    print("\n%d. %s" % (n, title))


# -- the demo --------------------------------------------------------------------


def main():
    print("procmgr demo -- sidecar %s" % os.environ.get("PROCMGR_BIN", "(from PATH)"))

    step(1, "Start three tools")
    ticker = procmgr.create("ticker", ["sh", "-c", "while :; do sleep 1; done"])
    terrific = procmgr.create("terrific", TERRIFIC)
    tree = procmgr.create("tree", ["sh", "-c", "sleep 600 & wait"])  # has a child of its own
    wait_for(lambda: children(tree.pid))
    grandchild = children(tree.pid)[0]
    print("    sidecar pid %d, log %s" % (procmgr.pid, procmgr.log_path))
    show("ticker", ticker.pid)
    show("terrific", terrific.pid)
    show("tree", tree.pid)
    show("tree's child (sleep 600)", grandchild)

    step(2, "Look them up")
    print('    procmgr.running("terrific")          ->', procmgr.running("terrific"))
    print('    procmgr.fetch("terrific")            ->', procmgr.fetch("terrific"))
    print('    procmgr.fetch("terrific").is_alive() ->', procmgr.fetch("terrific").is_alive())
    print('    procmgr.fetch("nothing")             ->', procmgr.fetch("nothing"))
    print("    tags in use:", [p.tag for p in procmgr.list()])

    step(3, "terrific crashes; restart it with the CASA page's pattern")
    old_pid = terrific.pid
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: not is_running(old_pid))
    print('    killed pid %d: running("terrific") -> %s, is_alive() -> %s'
          % (old_pid, procmgr.running("terrific"), terrific.is_alive()))
    # --- the CASA page's code, as written there ---
    procrun = procmgr.running("terrific")  # True
    myproc = procmgr.fetch("terrific")
    try:
        if procrun and not myproc.is_alive():  # crash!
            myproc.stop()  # tell procmgr it stopped
            procrun = False
    except AttributeError:  # fetch returns myproc=None if not created
        pass
    if not procrun:
        # start (or restart)
        procmgr.create("terrific", TERRIFIC)  # as shown above
    # ---
    new = procmgr.fetch("terrific")
    print("    old pid %d ended with returncode %s; restarted as pid %d"
          % (old_pid, myproc.returncode, new.pid))
    show("terrific (old)", old_pid)
    show("terrific (new)", new.pid)
    expect(not is_running(old_pid) and is_running(new.pid), "terrific restarted")

    step(4, "Stop the tree: its whole process group goes")
    rc = tree.stop()
    print('    tree.stop() -> returncode %s; running("tree") -> %s' % (rc, procmgr.running("tree")))
    show("tree", tree.pid)
    show("tree's child (sleep 600)", grandchild)
    expect(not is_running(tree.pid) and not is_running(grandchild), "tree stopped")

    step(5, "A throwaway host starts tools, then dies of SIGKILL")
    doomed_host()

    step(6, "Shut down this session's manager")
    pids = [p.pid for p in procmgr.list()] + [procmgr.pid]
    print("    procmgr.shutdown() stopped %d tools" % procmgr.shutdown())
    wait_for(lambda: not any(is_running(p) for p in pids))
    for p in pids:
        expect(not is_running(p), "pid %d stopped by shutdown" % p)
    print("    nothing left running: %s" % (not any(is_running(p) for p in pids)))

    print()
    if failures:
        print("FAILED: %s" % "; ".join(failures))
        return 1
    print("All done: every tool started in this demo is gone.")
    return 0


HOST = textwrap.dedent(
    r"""
    import json, os, signal, time
    from procmgr import procmgr

    def children(pid):
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]

    procmgr.create("logger", ["sleep", "600"])
    procmgr.create("plotter", ["sh", "-c", "sleep 600 & sleep 601 & wait"])
    procmgr.create("server", ["sh", "-c", "while :; do sleep 1; done"])
    plotter = procmgr.fetch("plotter").pid
    while len(children(plotter)) < 2:
        time.sleep(0.005)
    pids = {p.tag: p.pid for p in procmgr.list()}
    pids["plotter's child 1"], pids["plotter's child 2"] = children(plotter)
    print(json.dumps({"host": os.getpid(), "sidecar": procmgr.pid, "tools": pids,
                      "log": procmgr.log_path}), flush=True)
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def doomed_host():
    host = subprocess.Popen([sys.executable, "-c", HOST], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    report = json.loads(host.stdout.readline())
    host.stdout.close()
    watched = dict(report["tools"])
    watched["its sidecar"] = report["sidecar"]
    print("    host pid %d: its sidecar and %d tool processes" % (report["host"], len(report["tools"])))
    for label, pid in sorted(watched.items()):
        show(label, pid)

    host.wait()  # the host SIGKILLs itself; this returns the moment it is dead
    died = time.monotonic()
    print("    host died: %s" % ("SIGKILL" if host.returncode == -signal.SIGKILL else host.returncode))
    all_gone = wait_for(lambda: not any(is_running(p) for p in watched.values()), timeout=15)
    elapsed_ms = (time.monotonic() - died) * 1000
    for label, pid in sorted(watched.items()):
        show(label, pid)
    if all_gone:
        print("    => all %d gone %.0f ms after the host died" % (len(watched), elapsed_ms))
    else:
        survivors = [label for label, pid in watched.items() if is_running(pid)]
        expect(False, "survivors of the killed host: %s" % ", ".join(survivors))
    # The sidecar's own account, from its log (then the log goes: nobody else cleans it up).
    wait_for(lambda: "exiting" in read(report["log"]), timeout=5)
    print("    the sidecar's log says:")
    for line in read(report["log"]).splitlines():
        if "host is gone" in line or "stopped" in line or "exiting" in line:
            print("      " + line.split(" level=", 1)[-1])
    shutil.rmtree(os.path.dirname(report["log"]), ignore_errors=True)


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
