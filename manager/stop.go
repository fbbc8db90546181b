package manager

import (
	"context"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Stop sends sig (0: the tool's stop signal) to the tool's whole tree — its
// process group and the members that left it — waits up to timeout (negative,
// UseDefault: the tool's stop timeout; 0: no grace at all) for every member
// to exit, SIGKILLs whatever remains, and returns when nothing of the tree
// remains (or members outlived killWait of SIGKILL: logged). The tag is then free. A
// pending restart is cancelled, and none starts after Stop began; a
// restart's clean-up of the ended run under way ends, and Stop carries on
// from what it sent (no member gets the stop signal twice).
//
// Stopping a tool that already exited kills what is left of its tree and
// releases the tag. Concurrent stops of one tool share the first one's work
// and result; ctx bounds only how long a second caller waits for it.
func (m *Manager) Stop(ctx context.Context, tag string, sig syscall.Signal, timeout time.Duration) (Info, error) {
	t, err := m.lookupStarted(ctx, tag)
	if err != nil {
		return Info{}, err
	}
	t.mu.Lock()
	if done := t.stopDone; done != nil {
		t.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return t.info(), ctx.Err()
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		return t.final, nil
	}
	t.stopDone = make(chan struct{})
	close(t.stopBegun) // a create waiting for readiness gives up at once, a restart's clean-up ends
	clearing := t.clearing
	if t.timer != nil {
		t.timer.Stop()
		t.timer = nil
	}
	if t.state == StateRunning {
		t.state = StateStopping
	}
	stdin := t.stdin
	t.stdin = nil
	t.mu.Unlock()
	if stdin != nil {
		stdin.Close()
	}
	// A restart already past its check finishes its spawn first; then the
	// current run is final.
	t.runMu.Lock()
	t.runMu.Unlock() //nolint:staticcheck // an empty critical section: wait for the spawn

	if sig == 0 {
		sig = t.stopSignal
	}
	if timeout < 0 {
		timeout = t.stopTimeout
	}
	sent := &treeSignals{sig: sig}
	if clearing != nil {
		sent = m.takeOver(t, clearing, sent)
	}
	m.terminate(t, sent, timeout)
	t.orphans.Store(0) // its adopted orphans went with the tree
	if t.cg != nil {
		t.cg.release()
	}
	t.closeCaptures()

	t.mu.Lock()
	t.state = StateExited
	t.settleLocked()
	t.final = t.infoLocked()
	final := t.final
	t.mu.Unlock()
	m.mu.Lock()
	if m.tools[tag] == t {
		delete(m.tools, tag)
	}
	m.mu.Unlock()
	close(t.stopDone)
	m.log.Info("stopped", "tag", tag, "pid", final.Pid, "exit", describeExit(final))
	m.emit(EventStopped, final)
	return final, nil
}

// takeOver waits for a restart's clean-up of the tool's ended run (begun
// before the stop; stopBegun ends it within one round) and returns what it
// sent, for the stop to carry on from: a member that has the stop signal
// does not get it again. It returns fresh when the clean-up sent another
// signal or another run is current, or — logged — when the clean-up has
// not ended within killWait; then what it sent cannot be read safely.
func (m *Manager) takeOver(t *tool, c *clearing, fresh *treeSignals) *treeSignals {
	timer := time.NewTimer(killWait)
	defer timer.Stop()
	select {
	case <-c.done:
	case <-timer.C:
		m.log.Error("a restart's clean-up did not end for the stop", "tag", t.tag)
		return fresh
	}
	if c.r != t.current() || c.sent.sig != fresh.sig {
		return fresh
	}
	return &c.sent
}

// terminate is the stop sequence: signal, grace, SIGKILL, and wait until the
// tree is empty (stopTree, then killStrays), carrying on from what sent says
// was sent already.
func (m *Manager) terminate(t *tool, sent *treeSignals, grace time.Duration) {
	m.orph.stopping.Add(1) // the stop's own looks serve; orphan looks wait
	defer m.orph.stopping.Add(-1)
	r := t.current()
	m.stopTree(t, r, sent, grace, killByCgroup, nil)
	m.killStrays(t, r, nil)
	// Every member is dead now, but the ones orphaned to the sidecar stay
	// zombies until reaped (a dead process's children are handed to the
	// subreaper when it dies, so by now every dead member's parent is the
	// sidecar): reap them before the stop returns rather than on the
	// reaper's next SIGCHLD.
	m.mon.Reap()
}

// killMode says how the SIGKILL rounds of a tool's tree reach it.
type killMode uint8

const (
	// killBySignal: kill(2) to the run's process group and to each member.
	// For a cgroup that may see another run (a restart's clean-up).
	killBySignal killMode = iota
	// killByCgroup: cgroup.kill first (it also gets a member forked while
	// the kill is under way), then as killBySignal. Only for a tool being
	// stopped: on the kernel tested (6.18) a process later cloned into a
	// cgroup that was once cgroup.kill'ed is SIGKILLed at birth. Without a
	// cgroup it is killBySignal.
	killByCgroup
)

// treeSignals is what the stop sequence of a run's tree has sent so far.
// A stop that takes over a restart's clean-up carries on from the clean-up's.
type treeSignals struct {
	sig       syscall.Signal
	signalled map[int]bool // members that got sig; nil: nothing sent yet
	killing   bool         // the grace is over: SIGKILL rounds
}

// stopTree is the teardown of a run's tree: sent.sig to the whole tree, then
// to each member that appears during the grace — once each, since a second
// SIGTERM can re-enter a tool's handler — and after grace SIGKILL rounds
// (mode) until the main process is reaped and no member is left. It records
// what it sends in sent, and carries on from what sent holds: with signals
// sent already, the grace only signals members that did not get sent.sig;
// with killing, it goes straight to the SIGKILL rounds. A closed abort ends
// it (see teardown).
//
// Ancestry (no cgroup) is recorded once, just before the first signal:
// that signal kills parents of members found only by their parent chain.
// Later rounds look before they signal, and each look records the ancestry
// it sees, so a descendant forked during the stop is seen while its parent
// still lives.
func (m *Manager) stopTree(t *tool, r *run, sent *treeSignals, grace time.Duration, mode killMode, abort <-chan struct{}) {
	gone := func(members []procEntry) bool {
		select {
		case <-r.exited:
			return len(members) == 0 && (t.cg != nil || !m.procs.unsettled())
		default:
			return false
		}
	}
	sig := sent.sig
	term := func() bool {
		if sent.signalled == nil {
			sent.signalled = make(map[int]bool)
			members := m.signalTree(t, r, sig)
			for _, e := range members {
				sent.signalled[e.pid] = true
			}
			return gone(members)
		}
		members := m.membersOf(t, r)
		for _, e := range members {
			if !sent.signalled[e.pid] {
				sent.signalled[e.pid] = true
				m.killPid(e.pid, sig)
			}
		}
		return gone(members)
	}
	kill := func() bool {
		if !sent.killing {
			sent.killing = true
			m.log.Info("stop grace over, killing", "tag", t.tag, "pgid", r.pid)
		}
		return gone(m.killRound(t, r, mode))
	}
	d := teardown{term: term, grace: grace, kill: kill, wake: r.exited, abort: abort}
	if sent.killing {
		d.term = nil
	}
	if !d.run() && !d.aborted() {
		m.log.Error("members survive SIGKILL", "tag", t.tag, "members", len(m.membersOf(t, r)))
	}
}

// killStrays, in cgroup mode, looks through the whole process table for
// members outside the (now empty) cgroup — only a privileged process can have
// moved one out — and SIGKILLs them until none is found. Without cgroup mode
// stopTree looked there all along. A closed abort ends it (see teardown).
func (m *Manager) killStrays(t *tool, r *run, abort <-chan struct{}) {
	if t.cg == nil {
		return
	}
	var strays []procEntry
	kill := func() bool {
		strays = m.procs.membersOf(r.members(t.tag))
		for _, e := range strays {
			m.killPid(e.pid, syscall.SIGKILL)
		}
		return len(strays) == 0 && !m.procs.unsettled()
	}
	if d := (teardown{kill: kill, abort: abort}); !d.run() && !d.aborted() {
		m.log.Error("members outside the cgroup survive SIGKILL", "tag", t.tag, "members", len(strays))
	}
}

// signalTree sends sig to the tool's process group and, one by one, to the
// members that left it, and returns the members it found. The group goes
// first, so that most of the tree has the signal before the look at /proc.
// Without a cgroup, ancestry is recorded before that (stat only, no
// environment read, so the signal is not delayed): the group's signal kills
// parents, and a member found only by ancestry (no mark, out of the group)
// must be seen while its parent chain still leads to the tool — once seen,
// the table keeps it the tool's. In cgroup mode the cgroup holds every member.
//
// The group is signalled only while its leader is unreaped or members were
// just seen in it: a group id is not recycled while either holds.
func (m *Manager) signalTree(t *tool, r *run, sig syscall.Signal) []procEntry {
	if t.cg == nil {
		m.procs.recordAncestry()
	}
	group := groupToSignal
	m.mon.WithTracked(func(tracked func(int) bool) {
		if tracked(r.pid) {
			m.killGroup(r.pid, sig)
			group = groupSignalled
		}
	})
	members := m.membersOf(t, r)
	m.signalMembers(r, sig, members, group)
	return members
}

// killRound is one SIGKILL round of a stop: cgroup.kill (mode), then a look
// at the tree — which records the ancestry it sees before any parent dies of
// this round — then SIGKILL to the group and to the members that left it. It
// returns the members it found.
func (m *Manager) killRound(t *tool, r *run, mode killMode) []procEntry {
	if mode == killByCgroup && t.cg != nil {
		t.cg.kill()
	}
	members := m.membersOf(t, r)
	m.signalMembers(r, syscall.SIGKILL, members, groupToSignal)
	return members
}

// groupSignal says whether signalMembers is to signal the run's process
// group.
type groupSignal uint8

const (
	// groupToSignal: the group gets the signal, under signalMembers'
	// conditions.
	groupToSignal groupSignal = iota
	// groupSignalled: the group has it already (signalTree sends it before
	// its look at /proc).
	groupSignalled
)

// signalMembers sends sig to the run's group — if group is groupToSignal,
// and only while its leader is unreaped or one of members (just seen) is in
// it; after the reap a process counts as in it only if it is of the run's
// group, not of a stranger's that reused the id (inRunGroup) — and to each
// member out of the group.
func (m *Manager) signalMembers(r *run, sig syscall.Signal, members []procEntry, group groupSignal) {
	m.mon.WithTracked(func(tracked func(int) bool) {
		if group == groupToSignal && tracked(r.pid) {
			m.killGroup(r.pid, sig)
			group = groupSignalled
		}
		for _, e := range members {
			if group == groupToSignal && e.pgid == r.pid {
				m.killGroup(r.pid, sig) // the leader is gone, members were just seen
				group = groupSignalled
			}
		}
		for _, e := range members {
			if e.pgid != r.pid {
				m.killPid(e.pid, sig)
			}
		}
	})
}

// membersOf lists the tool's live processes. In cgroup mode the cgroup is
// the membership — no descendant can fork outside it — so only its members
// are looked at, not the whole process table (see killStrays for the rest).
// Otherwise: the current run's process group, the processes carrying the
// tool's mark, and their descendants, recorded or current (procTable), which
// finds the members that left the group, marked or not. Each call is one
// pass over /proc (shared by concurrent callers); the stop loop calls it
// until a pass finds nothing, so a tree that forks while stopped is taken.
func (m *Manager) membersOf(t *tool, r *run) []procEntry {
	if t.cg == nil {
		return m.procs.membersOf(r.members(t.tag))
	}
	var members []procEntry
	for _, pid := range t.cg.pids() {
		if e, ok := host.process(pid); ok && !e.zombie && pid != m.procs.self {
			members = append(members, e)
		}
	}
	return members
}

// killGroup signals a process group, refusing the ids that would reach far
// more than one tool: kill(-0) is our own group, kill(-1) everyone we may
// signal (as root: the machine).
func (m *Manager) killGroup(pgid int, sig syscall.Signal) {
	if pgid <= 1 || pgid == m.ownPgid {
		m.log.Error("refused to signal process group", "pgid", pgid)
		return
	}
	if err := unix.Kill(-pgid, sig); err != nil && err != unix.ESRCH {
		m.log.Warn("signal group", "pgid", pgid, "signal", SignalName(sig), "err", err)
	}
}

func (m *Manager) killPid(pid int, sig syscall.Signal) {
	if pid <= 1 || pid == m.procs.self {
		m.log.Error("refused to signal process", "pid", pid)
		return
	}
	if err := unix.Kill(pid, sig); err != nil && err != unix.ESRCH {
		m.log.Warn("signal", "pid", pid, "signal", SignalName(sig), "err", err)
	}
}

// Shutdown refuses new tools, stops every tool in parallel (each with its own
// stop signal, and grace unless it is negative, else its own stop timeout), then
// kills any process still carrying this session's mark and every adopted
// orphan (see sweep). It returns how many tools it stopped. ctx bounds the
// wait; a call after the first stops what is left and returns.
func (m *Manager) Shutdown(ctx context.Context, grace time.Duration) int {
	m.mu.Lock()
	m.closing = true
	m.mu.Unlock()
	m.creating.Wait() // a create in flight either lands in the list below or fails
	m.mu.Lock()
	var tags []string
	for tag, t := range m.tools {
		if t != nil {
			tags = append(tags, tag)
		}
	}
	m.mu.Unlock()

	var wg sync.WaitGroup
	var mu sync.Mutex
	stopped := 0
	for _, tag := range tags {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := m.Stop(ctx, tag, 0, grace); err == nil {
				mu.Lock()
				stopped++
				mu.Unlock()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	m.cancel()
	m.sweep()
	if m.cg != nil {
		m.cg.remove()
	}
	mu.Lock()
	defer mu.Unlock()
	return stopped
}

// sweep SIGKILLs, round after round for a bounded time (a teardown), every
// live process that still carries this session's mark or belongs to a tool
// (descendants of tools released earlier, or of a create that raced the
// shutdown) and every descendant of the sidecar but the watchdog: adopted
// orphans no tool could claim (an env-clearing setsid daemon) end here, with
// their children.
func (m *Manager) sweep() {
	spare := map[int]bool{}
	var left []procEntry
	kill := func() bool {
		if pid := m.WatchdogPid(); pid != 0 {
			spare[pid] = true
		}
		if m.cg != nil {
			killCgroupTree(m.cg.Dir())
		}
		left = m.procs.leftovers(spare)
		if len(left) == 0 && !m.procs.unsettled() {
			return true
		}
		m.killLeftovers(left)
		return false
	}
	if !(teardown{kill: kill}).run() && len(left) > 0 {
		pids := make([]int, len(left))
		for i, e := range left {
			pids[i] = e.pid
		}
		m.log.Error("session processes survive SIGKILL", "pids", pids)
	}
}
