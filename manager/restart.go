package manager

import (
	"math/rand/v2"
	"time"
)

// Defaults of RestartPolicy.
const (
	defaultRestartWindow  = 60 * time.Second
	defaultInitialBackoff = 500 * time.Millisecond
	defaultMaxBackoff     = 30 * time.Second
)

// onRunExit is the monitor callback of a run's main process (called once,
// from the reaper, under its lock). A Daemon tool's main process that exits
// 0 has daemonized: the tool goes on to follow what it left (daemon.go).
// Any other exit ends the run.
func (m *Manager) onRunExit(t *tool, r *run, e Exit) {
	r.leader.mark() // from now on its group id may be recycled (the launcher's reap, for a Daemon tool)
	if t.spec.Daemon && e.Code == 0 && e.Signal == 0 {
		t.mu.Lock()
		follow := t.stopDone == nil && t.run == r
		t.mu.Unlock()
		if follow {
			go m.followDaemon(t, r, e)
			return
		}
	}
	m.endRun(t, r, e)
}

// endRun records the exit of the run's main process and decides what
// follows: nothing (the tool stays exited, what it left waits for Stop, as
// CASA expects), or — once what is left of the run's tree is gone — a
// restart after a backoff, or the fatal state.
func (m *Manager) endRun(t *tool, r *run, e Exit) {
	t.mu.Lock()
	r.exit, r.reaped = e, true
	close(r.exited)
	var next *nextStep
	if t.stopDone == nil && t.run == r {
		next = m.afterExitLocked(t, e)
	}
	in := t.infoLocked()
	t.mu.Unlock()
	m.emit(EventExited, in)
	if next != nil {
		go m.clearThenFollow(t, r, next)
	}
}

// nextStep is what follows an exit under a restart policy.
type nextStep struct {
	fatal bool
	delay time.Duration // before the restart, counted from the exit
	at    time.Time     // the exit
}

// killMode is how the clean-up before the step kills the ended run's tree:
// cgroup.kill only when no run will follow (fatal), see killByCgroup.
func (n *nextStep) killMode() killMode {
	if n.fatal {
		return killByCgroup
	}
	return killBySignal
}

// afterExitLocked applies the restart policy to an exit (or a failed
// restart): nil when the tool stays exited. Called with t.mu held.
func (m *Manager) afterExitLocked(t *tool, e Exit) *nextStep {
	p := t.spec.Restart
	failed := e.Signal != 0 || e.Code != 0
	wants := p.When == RestartAlways || (p.When == RestartOnFailure && failed)
	if !wants {
		t.state = StateExited
		t.settleLocked()
		return nil
	}
	window := orDefault(p.Window, defaultRestartWindow)
	now := time.Now()
	kept := t.recent[:0]
	for _, at := range t.recent {
		if now.Sub(at) < window {
			kept = append(kept, at)
		}
	}
	t.recent = kept
	t.state = StateExited
	if len(t.recent) >= p.MaxRestarts {
		return &nextStep{fatal: true, at: now}
	}
	return &nextStep{delay: backoff(p, len(t.recent)), at: now}
}

// clearThenFollow stops what remains of the ended run's tree as Stop would
// (stop signal, grace, SIGKILL, until nothing is left) — a crashed server's
// child must not keep its port, nor a crash loop pile up orphans — and only
// then makes the tool fatal or schedules its restart (follow). A Stop that
// has begun takes over: before the clean-up, it clears the tree itself; during
// it, the clean-up ends within a round, and the stop waits for that and
// carries on from what the clean-up sent (Manager.takeOver): a second stop
// signal could re-enter a tool's handler. Nothing follows a stop.
func (m *Manager) clearThenFollow(t *tool, r *run, next *nextStep) {
	c := &clearing{r: r, sent: treeSignals{sig: t.stopSignal}, done: make(chan struct{})}
	t.mu.Lock()
	if t.stopDone != nil || t.run != r {
		t.mu.Unlock()
		return
	}
	t.clearing = c
	t.mu.Unlock()
	m.clearRun(t, r, next.killMode(), c)
	t.mu.Lock()
	t.clearing = nil
	t.mu.Unlock()
	close(c.done)
	m.follow(t, r, next)
}

// clearing is a restart's clean-up of an ended run, in flight. A stop that
// begins meanwhile ends it (stopBegun) and takes it over (Manager.takeOver).
type clearing struct {
	r    *run
	sent treeSignals // written by the clean-up; read by the stop once done is closed
	done chan struct{}
}

// follow makes the tool fatal or schedules its restart, and says so, unless
// a stop began or another run started meanwhile.
func (m *Manager) follow(t *tool, r *run, next *nextStep) {
	t.mu.Lock()
	if t.stopDone != nil || t.run != r {
		t.mu.Unlock()
		return
	}
	kind := EventRestarting
	if next.fatal {
		kind = EventFatal
		t.state = StateFatal
		t.settleLocked()
		m.log.Warn("tool is fatal: restarts used up", "tag", t.tag, "restarts", t.restarts)
	}
	in := t.infoLocked()
	t.mu.Unlock()
	m.emit(kind, in)
	if next.fatal {
		return
	}
	delay := max(0, next.delay-time.Since(next.at))
	t.mu.Lock()
	if t.stopDone == nil {
		t.timer = time.AfterFunc(delay, func() { m.restart(t) })
		m.log.Info("restarting after backoff", "tag", t.tag, "delay", delay)
	}
	t.mu.Unlock()
}

// clearRun is the stop sequence of stop.go applied to an ended run's
// leftovers, its SIGKILL rounds by mode (nextStep.killMode). A run that left
// nothing (most runs: a tool that exits alone) is not signalled at all, and
// costs no ancestry pass. It ends early when a stop begins (t.stopBegun),
// which takes over from c.sent.
func (m *Manager) clearRun(t *tool, r *run, mode killMode, c *clearing) {
	if len(m.membersOf(t, r)) > 0 || (t.cg == nil && m.procs.unsettled()) {
		m.stopTree(t, r, &c.sent, t.stopTimeout, mode, t.stopBegun)
	}
	m.killStrays(t, r, t.stopBegun)
}

// backoff is the delay before the (n+1)-th restart inside the window:
// initial·2ⁿ capped at max, with "equal jitter" (uniform in [d/2, d]) so
// that tools failing together do not restart in lockstep.
func backoff(p RestartPolicy, n int) time.Duration {
	initial := orDefault(p.InitialBackoff, defaultInitialBackoff)
	max := orDefault(p.MaxBackoff, defaultMaxBackoff)
	d := initial
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(d-half)+1))
}

// restart starts the next run once a backoff has passed, unless a stop came
// first. A run that cannot even be started counts as a failed exit.
func (m *Manager) restart(t *tool) {
	t.runMu.Lock()
	defer t.runMu.Unlock()
	t.mu.Lock()
	if t.stopDone != nil || t.timer == nil {
		t.mu.Unlock()
		return
	}
	t.timer = nil
	t.restarts++
	t.recent = append(t.recent, time.Now())
	t.mu.Unlock()

	if err := m.startRun(t, restartRun); err != nil {
		m.log.Warn("restart failed", "tag", t.tag, "err", err)
		t.mu.Lock()
		var next *nextStep
		if t.stopDone == nil {
			next = m.afterExitLocked(t, Exit{Code: -1, At: time.Now()})
		}
		r := t.run
		t.mu.Unlock()
		// r is the ended run, cleared before this restart was scheduled:
		// nothing of it is left to clear, and its process-group id may name
		// another process's group by now (pid reuse).
		if next != nil {
			go m.follow(t, r, next)
		}
		return
	}
	r := t.current()
	m.log.Info("restarted", "tag", t.tag, "pid", r.pid, "restarts", t.info().Restarts)
	if t.spec.Ready != nil {
		go func() {
			if err := m.awaitReady(m.ctx, t, r); err == nil {
				m.emit(EventReady, t.info())
			} else {
				m.log.Warn("restarted tool not ready", "tag", t.tag, "err", err)
			}
		}()
	}
}
