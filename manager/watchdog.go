package manager

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The session watchdog covers the one death the sidecar cannot handle itself:
// its own SIGKILL (or OOM kill). Its direct tools die then by their
// parent-death signal, but their descendants (setsid escapers, double-forked
// daemons, grandchildren) do not. One small watchdog process per session — the
// same binary, started with --watchdog — waits for the sidecar to die and then
// kills what is left of the session.
//
// It is started on the spawner thread (its parent-death signal is tied to the
// sidecar, like a tool's), in a session and process group of its own (a kill
// of the host's or the sidecar's group does not take it), with its stdin the
// read end of a pipe whose write end only the sidecar holds, and without
// PROCMGR_SESSION or PROCMGR_TAG in its environment (no sweep, ours or an
// outer session's, takes it for a tool).
//
// It keeps no state per tool: it knows the session id, the sidecar's pid and
// the session cgroup, and while idle it is blocked in read(2) and poll(2).
// When it wakes it sends SIGTERM to every process of the session and waits up
// to watchdogGrace for them to go (a tool may remove its sockets and temporary
// files), then kills, round after round until none remain (at most
// killWait): every process of the session cgroup tree, every process whose
// environment carries PROCMGR_SESSION=<session>, and — when the sidecar leads
// its own session, as the clients start it — every process of that session.
// Then it removes the session cgroup and the session's temporary directory
// (litter.go), and exits.
//
// Wake-ups: EOF on stdin (the sidecar is gone, or closed the pipe); a quit
// byte on stdin (the sidecar exits normally and asks for a last sweep); the
// parent-death signal (checked against getppid); and on Linux a pidfd of the
// sidecar. Where a pidfd is open, EOF alone is only a hint: the sweep waits
// until the sidecar really exited, so a pipe closed by mistake can never make
// the watchdog kill the tools of a live sidecar.

// watchdogQuit is the byte the sidecar writes before closing the pipe on a
// normal exit: sweep now, the sidecar is done with its tools.
const watchdogQuit = 'q'

// watchdogRestarts bounds how often a sidecar restarts a watchdog that died.
const watchdogRestarts = 5

// watchdog is the sidecar's handle on its session watchdog.
type watchdog struct {
	mu       sync.Mutex
	exe      string
	args     []string
	pid      int      // 0 when none runs
	pipe     *os.File // write end; EOF on the other side is the sidecar's death
	exited   chan struct{}
	closing  bool
	restarts int
}

// StartWatchdog starts the session watchdog: exe (empty: this very binary)
// run as `exe --watchdog --session ID --sidecar-pid PID --sidecar-start T
// [--sidecar-leads-session] args... [--cgroup DIR]` (main_watchdog.go parses
// it), which must end up in RunWatchdog. The monitor reaps it; should it die while
// the sidecar lives, it is logged and restarted (a few times).
func (m *Manager) StartWatchdog(exe string, args ...string) error {
	if exe == "" {
		exe = selfExe()
	}
	w := &m.wd
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pid != 0 {
		return errors.New("watchdog already running")
	}
	w.exe = exe
	// What the watchdog must know of the sidecar is passed now, while the
	// sidecar surely lives: the watchdog may run only after it died.
	start, ok := processStart(os.Getpid())
	if !ok {
		return errors.New("cannot read the sidecar's own start time")
	}
	w.args = []string{
		"--watchdog", "--session", m.cfg.Session,
		"--sidecar-pid", fmt.Sprint(os.Getpid()),
		"--sidecar-start", fmt.Sprint(start),
	}
	if sid, err := unix.Getsid(0); err == nil && sid == os.Getpid() {
		w.args = append(w.args, "--sidecar-leads-session")
	}
	w.args = append(w.args, args...)
	if dir := m.CgroupDir(); dir != "" {
		w.args = append(w.args, "--cgroup", dir)
	}
	return m.spawnWatchdogLocked()
}

// spawnWatchdogLocked forks the watchdog on the spawner thread. w.mu is held.
func (m *Manager) spawnWatchdogLocked() error {
	w := &m.wd
	r, wr, err := os.Pipe() // both ends close-on-exec
	if err != nil {
		return err
	}
	defer r.Close()
	attr := &syscall.ProcAttr{
		Env:   withoutMarks(os.Environ()),
		Files: []uintptr{r.Fd(), m.devnull.Fd(), os.Stderr.Fd()},
		Sys:   watchdogAttr(),
	}
	argv := append([]string{w.exe}, w.args...)
	exited := make(chan struct{})
	var pid int
	m.spawner.do(func() {
		pid, err = m.mon.Track(func() (int, error) {
			return syscall.ForkExec(w.exe, argv, attr)
		}, func(e Exit) {
			close(exited)
			go m.watchdogExited(e)
		})
	})
	if err != nil {
		wr.Close()
		return fmt.Errorf("start watchdog %s: %w", w.exe, err)
	}
	w.pid, w.pipe, w.exited = pid, wr, exited
	m.log.Info("session watchdog started", "pid", pid)
	return nil
}

// watchdogExited runs (off the reaper) when the watchdog process was reaped.
func (m *Manager) watchdogExited(e Exit) {
	w := &m.wd
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pid != e.Pid {
		return
	}
	w.pid = 0
	w.pipe.Close()
	if w.closing {
		return
	}
	m.log.Error("session watchdog died; descendants of tools are not covered against a SIGKILL of the sidecar until it is back",
		"pid", e.Pid, "exit_code", e.Code, "signal", SignalName(e.Signal), "restarts", w.restarts)
	if w.restarts >= watchdogRestarts {
		m.log.Error("session watchdog not restarted: it died too often")
		return
	}
	w.restarts++
	pause := time.Duration(w.restarts) * 100 * time.Millisecond
	w.mu.Unlock()
	time.Sleep(pause) // a watchdog that dies at once must not make us spin
	w.mu.Lock()
	if w.closing || w.pid != 0 {
		return
	}
	if err := m.spawnWatchdogLocked(); err != nil {
		m.log.Error("session watchdog not restarted", "err", err)
	}
}

// WatchdogPid is the pid of the running session watchdog, or 0.
func (m *Manager) WatchdogPid() int {
	m.wd.mu.Lock()
	defer m.wd.mu.Unlock()
	return m.wd.pid
}

// CloseWatchdog ends the watchdog on a normal exit of the sidecar: it asks for
// a last sweep (which finds nothing once every tool was stopped) and waits up
// to timeout for the watchdog to exit, so that the sidecar reaps it.
func (m *Manager) CloseWatchdog(timeout time.Duration) {
	w := &m.wd
	w.mu.Lock()
	w.closing = true
	pid, pipe, exited := w.pid, w.pipe, w.exited
	w.mu.Unlock()
	if pid == 0 {
		return
	}
	pipe.Write([]byte{watchdogQuit})
	pipe.Close()
	select {
	case <-exited:
	case <-time.After(timeout):
		m.log.Warn("session watchdog still sweeping; leaving it", "pid", pid)
	}
}

// WatchdogConfig is what the watchdog process is told on its command line.
type WatchdogConfig struct {
	Session    string // PROCMGR_SESSION value of the tools
	SidecarPid int    // the sidecar: our parent
	// SidecarStart is the sidecar's start time (as the OS gives it in the
	// process list): with SidecarPid, it names the sidecar uniquely.
	SidecarStart uint64
	// SidecarLeadsSession: the sidecar is the leader of its own session, so
	// every other member of that session is a tool or a tool's descendant.
	SidecarLeadsSession bool
	Cgroup              string // the session cgroup, "" without cgroup mode
	// TempDir is the session's temporary directory (litter.go), removed
	// after the sweep; "" when the host asked for none.
	TempDir string
	Logger  *slog.Logger
}

// watchdogGrace is how long the watchdog gives the session's processes
// between the stop signal and SIGKILL: long enough to remove a socket or a
// temporary file, short enough that a dead sidecar's tools do not linger.
const watchdogGrace = time.Second

// RunWatchdog is the body of `procmgr --watchdog`: it waits for the sidecar
// to end, sweeps the session and returns the exit code.
func RunWatchdog(cfg WatchdogConfig, stdin *os.File) int {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "watchdog", "session", cfg.Session)
	if cfg.Session == "" || cfg.SidecarPid <= 1 || cfg.SidecarStart == 0 {
		log.Error("watchdog needs --session, --sidecar-pid and --sidecar-start")
		return 2
	}
	// A container or service stop signals everyone; the watchdog outlives the
	// sidecar's graceful shutdown and sweeps after it.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	deathSig := make(chan os.Signal, 1)
	signal.Notify(deathSig, watchdogDeathSignal)
	if cfg.TempDir != "" {
		if err := recordWatchdog(cfg.TempDir); err != nil {
			log.Warn("cannot record the watchdog in the session's temporary directory", "err", err)
		}
	}

	s := newSweeper(cfg, log)
	reason := s.await(stdin, deathSig)
	log.Debug("sweeping the session", "reason", reason)
	start := time.Now()
	termed, killed, left := s.clear(watchdogGrace)
	if cfg.Cgroup != "" {
		removeCgroupTree(cfg.Cgroup)
	}
	if cfg.TempDir != "" {
		if err := RemoveTempDir(cfg.TempDir, cfg.Session); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.Warn("session temporary directory not removed", "dir", cfg.TempDir, "err", err)
		}
	}
	switch {
	case len(left) > 0:
		log.Error("session processes survive SIGKILL", "pids", left, "reason", reason)
		return 1
	case killed > 0:
		log.Info("sidecar gone: killed what was left of the session", "reason", reason,
			"terminated", termed, "killed", killed, "took", time.Since(start).Round(time.Millisecond))
	case termed > 0:
		log.Info("sidecar gone: stopped what was left of the session", "reason", reason,
			"terminated", termed, "took", time.Since(start).Round(time.Millisecond))
	}
	return 0
}

// sweeper finds and kills the processes of one session.
type sweeper struct {
	cfg  WatchdogConfig
	log  *slog.Logger
	self int
	exit <-chan struct{} // closed when the sidecar exited; nil where it cannot be watched
}

func newSweeper(cfg WatchdogConfig, log *slog.Logger) *sweeper {
	s := &sweeper{cfg: cfg, log: log, self: os.Getpid()}
	if os.Getppid() != cfg.SidecarPid {
		return s // the sidecar is gone already
	}
	exit, err := watchExit(cfg.SidecarPid)
	if err != nil {
		log.Debug("the sidecar's exit cannot be watched; it is watched by its pipe only", "err", err)
	}
	s.exit = exit
	if os.Getppid() != cfg.SidecarPid { // it died while we looked: the pidfd may name another process
		s.exit = nil
	}
	return s
}

// await blocks until the sidecar is gone or asks for the final sweep, and
// says why.
func (s *sweeper) await(stdin *os.File, deathSig <-chan os.Signal) string {
	if os.Getppid() != s.cfg.SidecarPid {
		return "sidecar gone before the watchdog started"
	}
	pipe := make(chan string, 1)
	go func() {
		b := make([]byte, 1)
		for {
			n, err := stdin.Read(b)
			if n == 1 && b[0] == watchdogQuit {
				pipe <- "quit"
				return
			}
			if err != nil {
				pipe <- "eof"
				return
			}
		}
	}()
	for {
		select {
		case r := <-pipe:
			if r == "quit" || s.exit == nil {
				return "stdin " + r
			}
			// EOF with a pidfd open: the sidecar is exiting or closed the
			// pipe by mistake. Sweep only once it really exited.
			pipe = nil
		case <-s.exit:
			return "sidecar exited"
		case <-deathSig:
			if os.Getppid() != s.cfg.SidecarPid {
				return "parent-death signal"
			}
		}
	}
}

// sweepQuiet is how long the kill rounds must keep finding nothing before
// the sweep ends.
const sweepQuiet = 20 * time.Millisecond

// clear is the watchdog's teardown of the session. It sends SIGTERM to every
// process of the session once and gives them up to grace to go, so that a
// tool can remove its sockets and temporary files (per-tool stop signals are
// the sidecar's to know; the watchdog keeps no state per tool). Then it kills
// the session round after round until the rounds have found nothing, and
// left no environment to read again, for sweepQuiet, or killWait passes.
// It returns how many processes it sent SIGTERM and SIGKILL, and the pids the
// last round still found. Tools the sidecar started itself are usually gone
// already: their parent-death signal is SIGKILL.
func (s *sweeper) clear(grace time.Duration) (termed, killed int, left []int) {
	seen := map[int]bool{}
	unreadable := emptyEnvirons{}
	var quiet time.Time // when a round first found nothing
	kill := func() bool {
		found, pending := s.round(unreadable)
		for _, pid := range found {
			seen[pid] = true
		}
		left = found
		if len(found) > 0 || pending {
			quiet = time.Time{}
			return false
		}
		// A process being forked when the round listed /proc (by a member
		// dying of its parent-death signal just then) is not listed yet:
		// believe an empty round once another, a while later, agrees.
		if quiet.IsZero() {
			quiet = time.Now()
		}
		return time.Since(quiet) >= sweepQuiet
	}
	var reached []procKey
	sent := false
	term := func() bool {
		if !sent {
			sent = true
			reached = s.signalAll(unix.SIGTERM)
			termed = len(reached)
		}
		for _, k := range reached {
			if e, ok := host.process(k.pid); ok && e.start == k.start && !e.zombie {
				return false
			}
		}
		return kill() // those are gone: the grace is over for the rest
	}
	teardown{term: term, grace: grace, kill: kill}.run()
	return termed, len(seen), left
}

// round SIGKILLs every live process of the session once and returns their
// pids (a process may be listed twice), and whether some process's
// environment must be read again (see envSettle).
func (s *sweeper) round(unreadable emptyEnvirons) (found []int, pending bool) {
	if s.cfg.Cgroup != "" {
		killCgroupTree(s.cfg.Cgroup)
		found = append(found, cgroupTreePids(s.cfg.Cgroup)...)
	}
	members, pending, err := s.members(unreadable)
	if err != nil {
		s.log.Warn("cannot list processes", "err", err)
		return found, true
	}
	for _, e := range members {
		if err := unix.Kill(e.pid, unix.SIGKILL); err == nil {
			found = append(found, e.pid)
		}
	}
	return found, pending
}

// signalAll sends sig once to every live process of the session (cgroup
// tree, marks, sidecar's session) and returns those it reached.
func (s *sweeper) signalAll(sig unix.Signal) []procKey {
	var reached []procKey
	seen := map[int]bool{}
	send := func(pid int) {
		if seen[pid] || pid <= 1 || pid == s.self || pid == s.cfg.SidecarPid {
			return
		}
		seen[pid] = true
		e, ok := host.process(pid)
		if !ok || e.zombie {
			return
		}
		if unix.Kill(pid, sig) == nil {
			reached = append(reached, procKey{pid, e.start})
		}
	}
	if s.cfg.Cgroup != "" {
		for _, pid := range cgroupTreePids(s.cfg.Cgroup) {
			send(pid)
		}
	}
	members, _, err := s.members(emptyEnvirons{})
	if err != nil {
		s.log.Warn("cannot list processes", "err", err)
	}
	for _, e := range members {
		send(e.pid)
	}
	return reached
}

// members lists the live processes of the session found through their marks
// or the sidecar's session, and whether some environment must be read again
// (see envSettle).
func (s *sweeper) members(unreadable emptyEnvirons) (out []procEntry, pending bool, err error) {
	entries, err := host.processes()
	if err != nil {
		return nil, true, err
	}
	bySid := s.cfg.SidecarLeadsSession
	for _, e := range entries {
		if e.pid == s.cfg.SidecarPid && e.start != s.cfg.SidecarStart {
			// The sidecar's pid names another process now, so no process is
			// left in the sidecar's session (the kernel does not recycle a pid
			// still in use as a session id): sid matching would hit strangers.
			bySid = false
		}
	}
	// Decide every process first, then kill: a kill re-parents the
	// victim's children, and ancestry must be read before that.
	ours := make(map[int]bool, len(entries))
	for _, e := range entries {
		if e.zombie || e.pid <= 1 || e.pid == s.self || e.pid == s.cfg.SidecarPid {
			continue
		}
		member, known := s.member(e.pid, bySid)
		if !known {
			pending = unreadable.settling(procKey{e.pid, e.start}, time.Now()) || pending
			continue
		}
		ours[e.pid] = member
	}
	for _, pid := range descendantsOf(entries, ours, s.self) {
		ours[pid] = true
	}
	for _, e := range entries {
		if ours[e.pid] && !e.zombie {
			out = append(out, e)
		}
	}
	return out, pending, nil
}

// descendantsOf lists the live processes of entries, not themselves marked
// in ours, whose parent chain leads to a process marked true in ours: a
// member's child that cleared its environment and left the session is still
// the session's while its parent lives. The chain is not followed through
// spare (the watchdog). One walk, memoised.
func descendantsOf(entries []procEntry, ours map[int]bool, spare int) []int {
	parent := make(map[int]int, len(entries))
	for _, e := range entries {
		if !e.zombie {
			parent[e.pid] = e.ppid
		}
	}
	memo := make(map[int]bool, len(entries))
	var below func(pid, depth int) bool
	below = func(pid, depth int) bool {
		if ours[pid] {
			return true
		}
		if v, ok := memo[pid]; ok {
			return v
		}
		pp, ok := parent[pid]
		v := ok && pid > 1 && pid != spare && depth < len(parent) && below(pp, depth+1)
		memo[pid] = v
		return v
	}
	var out []int
	for _, e := range entries {
		if !e.zombie && e.pid > 1 && e.pid != spare && !ours[e.pid] && below(e.pid, 0) {
			out = append(out, e.pid)
		}
	}
	return out
}

// member reports whether pid belongs to the session: it carries its mark, or
// (bySid) it is in the session the sidecar led. known is false when its
// environment must be read again (readEnvMark): it may be in an exec.
func (s *sweeper) member(pid int, bySid bool) (ours, known bool) {
	if bySid {
		if sid, err := unix.Getsid(pid); err == nil && sid == s.cfg.SidecarPid {
			return true, true
		}
	}
	mark, known := readEnvMark(pid, s.cfg.Session)
	return mark.ours, known
}
