package manager

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Adopted orphans. The sidecar is a child subreaper, so every process whose
// parent exits below it is re-parented to it: a double-forked daemon, the
// child of a tool that exited, the child of a member a stop killed. Each one
// is, by construction, a descendant of this session. The sidecar looks at
// its children it did not start (the monitor tracks those it did: tools'
// main processes and the watchdog) and attributes each to a tool when it can
// — its marks, its tool's process group, an owner recorded by ancestry while
// its parent chain still led to a tool (procTable), or, in cgroup mode, its
// tool's cgroup. An attributed orphan goes with its tool's stop (procTable
// and the cgroup find it); one that cannot be attributed is killed at the
// session's end (Shutdown, which also runs on the host's death). Both are
// counted: Info.Orphans per tool, Manager.Orphans for the rest.
//
// When it looks: after every reap (a tool's exit re-parents its children to
// the sidecar; an orphan's exit changes the count), and on a slow timer
// while there are tools or orphans, since a
// double fork re-parents a grandchild without any signal to the sidecar.
// The timer keeps the looking under about 0.1% of a CPU (the idle budget of
// docs/benchmarks.md row 5): its period is 1000 times the last look's
// duration, between 1 s and 30 s (about 9 s at 1000 tools); looks asked for
// more often are spaced out (orphanScanGap). A look is one pass over /proc
// (procTable), shared with every stop in progress. Each look also records
// the ancestry of every tool's processes, so an escaper whose parent chain
// lived through a look stays its tool's after the chain breaks.

// orphanScan bounds the slow timer's period (see above).
const (
	orphanScanMin  = time.Second
	orphanScanMax  = 30 * time.Second
	orphanScanDuty = 1000 // period ≥ orphanScanDuty × a look's duration
	// orphanScanGap is the least time between two looks, so that a burst of
	// exits (a shutdown of many tools) or a daemon whose short-lived
	// children keep being re-parented to the sidecar does not make it scan
	// /proc back to back: at least 20 ms, and at least orphanGapDuty times
	// the last look's duration (at most about 5% of a CPU however many exits).
	orphanScanGap = 20 * time.Millisecond
	orphanGapDuty = 20
)

// orphanSet is what the last look found.
type orphanSet struct {
	mu    sync.Mutex
	stray int // adopted orphans that belong to no tool
	// attributed counts the adopted orphans attributed to a tool; each
	// tool's own count is its tool.orphans.
	attributed int
	// stopping counts stops in progress. Their own looks at the table record
	// ancestry and take their members; an orphan look meanwhile (each member
	// a stop kills may be reaped by the sidecar) would only compete with them
	// for the CPU, so it waits until they are done.
	stopping atomic.Int32
}

// Orphans is how many live processes the sidecar adopted (re-parented to it,
// not started by it) that belong to no tool, as of its last look. It answers
// from memory: a caller (hello) must not set the sidecar to work. They are
// killed when the session ends.
func (m *Manager) Orphans() int {
	m.orph.mu.Lock()
	defer m.orph.mu.Unlock()
	return m.orph.stray
}

// toolGroups maps the process group of every registered tool's current run
// to its tag: the seeds of ancestry attribution (procTable.groups).
func (m *Manager) toolGroups() map[int]groupOwner {
	tools := m.snapshotTools()
	out := make(map[int]groupOwner, len(tools))
	for _, t := range tools {
		if r := t.current(); r != nil && r.pid > 1 {
			out[r.pid] = groupOwner{tag: t.tag, leader: r.leader.load()}
		}
	}
	return out
}

// snapshotTools copies the registered tools (m.mu is not held afterwards).
func (m *Manager) snapshotTools() []*tool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*tool, 0, len(m.tools))
	for _, t := range m.tools {
		if t != nil {
			out = append(out, t)
		}
	}
	return out
}

// watchOrphans looks for adopted orphans until the manager shuts down.
func (m *Manager) watchOrphans() {
	timer := time.NewTimer(orphanScanMin)
	defer timer.Stop()
	var last time.Time
	var took time.Duration // the last look's duration
	period := orphanScanMin
	deferred := false // a look asked for came too soon and waits on the timer
	for {
		ticked := false
		select {
		case <-m.ctx.Done():
			return
		case <-m.mon.Reaped():
		case <-timer.C:
			ticked = true
		}
		if gap, least := time.Since(last), max(orphanScanGap, orphanGapDuty*took); gap < least || m.orph.stopping.Load() > 0 {
			// Too soon after the last look: look when the gap is over.
			// (Since Go 1.23, Reset drops a value the timer already sent.)
			timer.Reset(max(least-gap, orphanScanGap))
			deferred = true
			continue
		}
		if ticked && !deferred && !m.orphansWorthALook() {
			timer.Reset(period)
			continue
		}
		deferred = false
		start := time.Now()
		m.scanOrphans()
		last = time.Now()
		took = last.Sub(start)
		period = min(max(orphanScanDuty*took, orphanScanMin), orphanScanMax)
		timer.Reset(period)
	}
}

// orphansWorthALook: the timer's look is needed only while a tool could
// leave an orphan or an orphan is known.
func (m *Manager) orphansWorthALook() bool {
	m.orph.mu.Lock()
	known := m.orph.stray > 0 || m.orph.attributed > 0
	m.orph.mu.Unlock()
	if known {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.tools) > 0
}

// scanOrphans takes a fresh snapshot (which records ancestry for every
// process of every tool), finds the sidecar's children it did not start, and
// counts them per tool.
func (m *Manager) scanOrphans() {
	children, owners := m.procs.adopted()
	started := make([]bool, len(children))
	m.mon.WithTracked(func(tracked func(int) bool) {
		for i, e := range children {
			started[i] = tracked(e.pid)
		}
	})
	var cgTags map[string]string // tool cgroup directory name → tag
	stray, attributed, byTag := 0, 0, map[string]int{}
	for i, e := range children {
		if started[i] {
			continue
		}
		tag := owners[i]
		if tag == "" && m.cg != nil {
			if cgTags == nil {
				cgTags = m.toolCgroups()
			}
			if tag = cgTags[m.cgroupOf(e.pid)]; tag != "" {
				m.procs.record(procKey{e.pid, e.start}, tag)
			}
		}
		if tag == "" {
			stray++
		} else {
			byTag[tag]++
			attributed++
		}
	}
	m.orph.mu.Lock()
	changed := stray != m.orph.stray || attributed != m.orph.attributed
	m.orph.stray, m.orph.attributed = stray, attributed
	m.orph.mu.Unlock()
	if changed {
		m.log.Debug("adopted orphans", "unattributed", stray, "attributed", byTag)
	}
	for _, t := range m.snapshotTools() {
		t.orphans.Store(int32(byTag[t.tag]))
	}
}

// toolCgroups maps the name of every tool's cgroup directory to its tag.
func (m *Manager) toolCgroups() map[string]string {
	out := map[string]string{}
	for _, t := range m.snapshotTools() {
		if cg := t.cg; cg != nil {
			out[cg.dir[strings.LastIndexByte(cg.dir, '/')+1:]] = t.tag
		}
	}
	return out
}

// cgroupOf names the tool cgroup directory of this session that pid is in
// (or below), or "".
func (m *Manager) cgroupOf(pid int) string {
	path, err := procCgroup("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return ""
	}
	_, rest, ok := strings.Cut(path, "/procmgr-"+m.cfg.Session+"/")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, "/")
	return name
}

// killLeftovers SIGKILLs what a shutdown found left (procTable.leftovers).
// A child of the sidecar is signalled under the monitor's read lock after its
// parent and start time were read again: it cannot be reaped meanwhile, so
// its pid cannot have been recycled. Deeper descendants carry the pid-reuse
// window every attribution by /proc has (docs/containment.md).
func (m *Manager) killLeftovers(left []procEntry) {
	self := m.procs.self
	var deeper []int
	m.mon.WithTracked(func(func(int) bool) {
		for _, e := range left {
			if e.ppid != self {
				deeper = append(deeper, e.pid)
				continue
			}
			if now, ok := host.process(e.pid); ok && now.ppid == self && now.start == e.start && !now.zombie {
				m.killPid(e.pid, syscall.SIGKILL)
			}
		}
	})
	for _, pid := range deeper {
		m.killPid(pid, syscall.SIGKILL)
	}
}
