package manager

import (
	"math/rand/v2"
	"time"
)

// Defaults of RestartPolicy.
const (
	DefaultRestartWindow  = 60 * time.Second
	DefaultInitialBackoff = 500 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
)

// onRunExit is a run's Monitor callback (called once, from the reaper): it
// records the exit and decides what follows — a restart after a backoff, the
// fatal state, or nothing.
func (m *Manager) onRunExit(t *tool, r *run, e Exit) {
	t.mu.Lock()
	r.exit, r.reaped = e, true
	close(r.exited)
	var follow string
	if t.stopDone == nil && t.run == r {
		follow = m.afterExitLocked(t, e)
	}
	in := t.infoLocked()
	t.mu.Unlock()
	m.emit(EventExited, in)
	if follow != "" {
		m.emit(follow, in)
	}
}

// afterExitLocked applies the restart policy to an exit (or a failed
// restart) and returns the event that follows, if any. Called with t.mu held.
func (m *Manager) afterExitLocked(t *tool, e Exit) string {
	p := t.spec.Restart
	failed := e.Signal != 0 || e.Code != 0
	wants := p.When == RestartAlways || (p.When == RestartOnFailure && failed)
	if !wants {
		t.state = StateExited
		t.settleLocked()
		return ""
	}
	window := p.Window
	if window == 0 {
		window = DefaultRestartWindow
	}
	now := time.Now()
	kept := t.recent[:0]
	for _, at := range t.recent {
		if now.Sub(at) < window {
			kept = append(kept, at)
		}
	}
	t.recent = kept
	if len(t.recent) >= p.MaxRestarts {
		t.state = StateFatal
		t.settleLocked()
		m.log.Warn("tool is fatal: restarts used up", "tag", t.tag, "restarts", t.restarts, "window", window)
		return EventFatal
	}
	t.state = StateExited
	delay := backoff(p, len(t.recent))
	t.timer = time.AfterFunc(delay, func() { m.restart(t) })
	m.log.Info("restarting after backoff", "tag", t.tag, "delay", delay)
	return EventRestarting
}

// backoff is the delay before the (n+1)-th restart inside the window:
// initial·2ⁿ capped at max, with "equal jitter" (uniform in [d/2, d]) so
// that tools failing together do not restart in lockstep.
func backoff(p RestartPolicy, n int) time.Duration {
	initial, max := p.InitialBackoff, p.MaxBackoff
	if initial == 0 {
		initial = DefaultInitialBackoff
	}
	if max == 0 {
		max = DefaultMaxBackoff
	}
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

	if err := m.startRun(t, false); err != nil {
		m.log.Warn("restart failed", "tag", t.tag, "err", err)
		t.mu.Lock()
		follow := ""
		if t.stopDone == nil {
			follow = m.afterExitLocked(t, Exit{Code: -1, At: time.Now()})
		}
		in := t.infoLocked()
		t.mu.Unlock()
		if follow != "" {
			m.emit(follow, in)
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
