package manager

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// daemonWait bounds how long a daemonizing launcher's leftovers are looked
// for: the pid file to name a process of the tree, or an adopted member to
// appear while the tree still has members.
const daemonWait = 5 * time.Second

// followDaemon runs when a Daemon tool's main process exited 0. The tool's
// main process becomes the daemon it left behind: the process named by
// PidFile, or else the oldest live member of its tree that the sidecar
// adopted as subreaper. Its exit is then the tool's exit (routed by the
// monitor, the one reaper), a "daemonized" event gives the new pid, and
// Info.Pid, Alive, Wait and the restart policy follow it. When nothing is
// found within daemonWait (at once when the tree is empty), or a stop
// begins, the run ends with the launcher's exit, as without Daemon.
//
// A followed daemon that itself exits 0 is followed the same way: an
// intermediate process of a double fork may be adopted first.
func (m *Manager) followDaemon(t *tool, r *run, launcher Exit) {
	deadline := time.Now().Add(daemonWait)
	pause := time.Millisecond
	for {
		t.mu.Lock()
		stopping := t.stopDone != nil
		t.mu.Unlock()
		if stopping {
			break
		}
		cand, empty := m.findDaemon(t, r)
		if cand.pid != 0 {
			var in Info
			adopted := m.mon.Adopt(cand.pid, func() {
				t.mu.Lock()
				r.main, r.mainPgid = cand.pid, cand.pgid
				in = t.infoLocked()
				t.mu.Unlock()
			}, func(e Exit) { m.onRunExit(t, r, e) })
			if adopted {
				m.log.Info("following daemon", "tag", t.tag, "launcher", launcher.Pid, "pid", cand.pid)
				m.emit(EventDaemonized, in)
				return
			}
			// It died and was reaped meanwhile: look again.
		} else if empty {
			break // nothing is left to follow
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
	m.endRun(t, r, launcher)
}

// findDaemon picks the process to follow. empty reports that no member of
// the tree is left at all (and every process's attribution is settled).
func (m *Manager) findDaemon(t *tool, r *run) (cand procEntry, empty bool) {
	members := m.membersOf(t, r)
	empty = len(members) == 0 && (t.cg != nil || !m.procs.unsettled())
	if t.spec.PidFile != "" {
		pid, ok := readPidFile(t.spec.PidFile, t.spec.Dir)
		if !ok {
			return procEntry{}, empty
		}
		for _, e := range members {
			if e.pid == pid && e.ppid == m.procs.self {
				return e, empty
			}
		}
		return procEntry{}, empty // stale, not yet adopted, or not ours: not followed
	}
	for _, e := range members {
		if e.ppid != m.procs.self || e.zombie {
			continue
		}
		if cand.pid == 0 || e.start < cand.start || (e.start == cand.start && e.pid < cand.pid) {
			cand = e
		}
	}
	return cand, empty
}

// readPidFile reads a pid file as systemd's PIDFile= does: one decimal pid.
func readPidFile(path, dir string) (int, bool) {
	if !filepath.IsAbs(path) && dir != "" {
		path = filepath.Join(dir, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid, err == nil && pid > 1
}
