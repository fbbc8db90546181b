"""A neighbour procmgr session for `make stress`: another host beside the
suite under test, creating and stopping small process trees in a loop until it
is terminated. Its tools die with it (that is procmgr's job); it exits 0 on
SIGTERM/SIGINT after shutting its sidecar down."""
import signal
import sys

from procmgr import ProcessManager

stopping = False


def _stop(*_):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, _stop)
signal.signal(signal.SIGINT, _stop)

TREES = [
    ["/bin/sleep", "1000"],
    ["/bin/sh", "-c", "/bin/sleep 1000 & /bin/sleep 1000 & wait"],
    ["/bin/sh", "-c", "trap '' TERM; /bin/sleep 1000 & wait"],
    ["/bin/sh", "-c", "/usr/bin/setsid /bin/sleep 1000 & wait"],
    ["/bin/sh", "-c", "echo out; echo err >&2; exec /bin/sleep 1000"],
]

with ProcessManager(stop_timeout=0.2) as pm:
    live = {}
    i = 0
    while not stopping:
        tag = "n%d" % (i % 8)
        try:
            if tag in live:
                live.pop(tag).stop()
            live[tag] = pm.create(tag, TREES[i % len(TREES)])
            if i % 3 == 0:
                live.pop(tag).stop()
        except Exception as e:  # a neighbour keeps going; the suite is what is tested
            print("neighbour: %r" % (e,), file=sys.stderr)
            live.pop(tag, None)
            p = pm.fetch(tag)
            if p is not None:
                p.stop()
        i += 1
sys.exit(0)
