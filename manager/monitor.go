package manager

import (
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Exit is how a process ended, as wait4 reported it.
type Exit struct {
	Pid    int
	Code   int            // exit code; -1 when killed by a signal
	Signal syscall.Signal // the killing signal; 0 when it exited normally
	At     time.Time
	// CPU is the user + system time of the process and of the children it
	// waited for, from wait4's rusage.
	CPU time.Duration
}

func exitFromStatus(pid int, ws unix.WaitStatus, ru *unix.Rusage) Exit {
	e := Exit{Pid: pid, Code: -1, At: time.Now()}
	if ru != nil {
		e.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	switch {
	case ws.Exited():
		e.Code = ws.ExitStatus()
	case ws.Signaled():
		e.Signal = syscall.Signal(ws.Signal())
	}
	return e
}

// monitor is the sidecar's one reaper. It alone calls wait4, so no exit
// status is stolen from its owner, and it serialises reaping against
// signalling: a pid registered with Track is signalled only under the read
// lock while still unreaped, so a recycled pid is never hit.
//
// Because the sidecar is a child subreaper, orphaned descendants of tools are
// re-parented to it; the monitor reaps them too, so none stays a zombie.
type monitor struct {
	mu      sync.RWMutex // write: wait4 and spawn+register; read: signal a tracked pid
	tracked map[int]func(Exit)
	log     *slog.Logger
	sigchld chan os.Signal
	reaped  chan struct{} // gets a token after a reap collected something

	// untracked, if set, is told of every reaped process nobody tracked (an
	// orphan re-parented to the sidecar), under the lock like onExit.
	untracked func(Exit)
}

// newMonitor starts reaping, for the life of the process: the sidecar has
// one reaper, and it must never stop while a child may exit.
func newMonitor(log *slog.Logger) *monitor {
	m := &monitor{
		tracked: make(map[int]func(Exit)),
		log:     log,
		sigchld: make(chan os.Signal, 1),
		reaped:  make(chan struct{}, 1),
	}
	signal.Notify(m.sigchld, syscall.SIGCHLD)
	go m.loop()
	return m
}

func (m *monitor) loop() {
	// A slow tick is only a safety net against a lost SIGCHLD; the signal does the work.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		m.reap()
		select {
		case <-m.sigchld:
		case <-tick.C:
		}
	}
}

// reap collects every exited child. Callbacks run under the write lock so that
// a reader who sees a pid as tracked also sees its owner's state before the exit.
func (m *monitor) reap() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for n := 0; ; n++ {
		var ws unix.WaitStatus
		var ru unix.Rusage
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, &ru)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if pid <= 0 || err != nil {
			if n > 0 {
				select { // an exit may have re-parented processes to us
				case m.reaped <- struct{}{}:
				default:
				}
			}
			return
		}
		if ws.Stopped() || ws.Continued() {
			continue
		}
		onExit, ok := m.tracked[pid]
		if !ok {
			m.log.Debug("reaped adopted orphan", "pid", pid, "status", int(ws))
			if m.untracked != nil {
				m.untracked(exitFromStatus(pid, ws, &ru))
			}
			continue
		}
		delete(m.tracked, pid)
		onExit(exitFromStatus(pid, ws, &ru))
	}
}

// Reaped yields a token after a reap collected one or more children: a
// tool's exit re-parents its orphaned children to the sidecar, an adopted
// orphan's exit changes what is left. Tokens do not pile up.
func (m *monitor) Reaped() <-chan struct{} { return m.reaped }

// Reap collects, before it returns, every child that has exited by now, as
// the reaper's loop would on its next SIGCHLD. Stop calls it once the tree is
// dead: a member orphaned to the sidecar (a subreaper) is a zombie until it is
// reaped, and a stop must not return while any of the tree remains.
func (m *monitor) Reap() { m.reap() }

// Track runs start, which must create exactly one child and return its pid, and
// registers onExit for it before any reap can run, so even a child that exits at
// once is attributed. onExit is called once, from the reaper, under its lock:
// it must be quick and must not call back into the monitor.
func (m *monitor) Track(start func() (int, error), onExit func(Exit)) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pid, err := start()
	if err != nil {
		return 0, err
	}
	m.tracked[pid] = onExit
	return pid, nil
}

// Adopt routes the exit of pid — a process the sidecar did not start but
// adopted as subreaper (a daemon whose parent exited) — to onExit, after
// running attach, both under the reaper's lock so that no reap falls between
// them. It returns false, and runs neither, when pid is not an unreaped
// child of the sidecar (reaped already, or someone else's child) or is
// tracked already.
func (m *monitor) Adopt(pid int, attach func(), onExit func(Exit)) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.tracked[pid]; ok || !unreapedChild(pid) {
		return false
	}
	attach()
	m.tracked[pid] = onExit
	return true
}

// OnUntracked sets the function told of every reaped process that nobody
// tracked; like onExit it must be quick and must not call back into the monitor.
func (m *monitor) OnUntracked(f func(Exit)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.untracked = f
}

// WithTracked runs f under the read lock: while f runs, no tracked process is
// reaped, so a pid or process group whose leader is tracked cannot be recycled.
func (m *monitor) WithTracked(f func(isTracked func(pid int) bool)) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	f(func(pid int) bool { _, ok := m.tracked[pid]; return ok })
}
