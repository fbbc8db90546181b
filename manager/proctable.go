package manager

import (
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// procTable answers "which live processes belong to this tool?" from one OS
// snapshot shared by every caller for a few milliseconds, so a shutdown that
// stops a thousand tools at once scans the process table once per round, not a
// thousand times. Environment attribution is read once per process (keyed by
// pid and start time) and cached.
//
// Every snapshot also attributes each process to a tool — its owner — by
// the first of: its PROCMGR_TAG (with this session's PROCMGR_SESSION); the
// process group of a tool's current run; an owner recorded in an earlier
// snapshot; its parent's owner. The last one is ancestry: a descendant that
// cleared its environment and left the group (setsid) is still its tool's
// while its parent chain leads there, and once seen so it stays its tool's
// after that chain breaks (its parent exits and it is re-parented to the
// sidecar). One /proc pass per snapshot serves every tool.
type procTable struct {
	session string
	self    int
	// groups lists the tools' current process groups. It is called with mu
	// held, after the pass over /proc it serves, and must not call back into
	// the table.
	groups func() map[int]groupOwner

	mu            sync.Mutex
	taken         time.Time
	ancestryTaken time.Time // the last pass of recordAncestry
	entries       []procEntry
	led           map[int]bool       // the snapshot's process groups that have their leader (see leaders)
	tags          map[procKey]string // tag of this session's processes; "" for others
	// owner is the tool each live process of the snapshot belongs to (see
	// above); processes of no tool are absent.
	owner map[procKey]string
	// recorded holds owners found by ancestry, kept while the process lives
	// so that it stays attributed after its parent chain breaks.
	recorded map[procKey]string
	// unread: processes whose environment read empty, since when.
	// They are read again in every snapshot for envSettle, then taken as not ours.
	unread   emptyEnvirons
	unsettle bool // some process in unread is younger than envSettle
}

// envSettle is how long a process whose environment reads empty is read
// again before it counts as not ours. A process in the middle of an execve
// shows an empty environ for a moment (the kernel sets the new one up after
// switching the memory map); one started with an empty environment or a
// kernel thread shows it for good.
const envSettle = 50 * time.Millisecond

type procKey struct {
	pid   int
	start uint64
}

const snapshotTTL = 2 * time.Millisecond

func newProcTable(session string, groups func() map[int]groupOwner) *procTable {
	if groups == nil {
		groups = func() map[int]groupOwner { return nil }
	}
	return &procTable{session: session, self: os.Getpid(), groups: groups,
		tags: make(map[procKey]string), unread: make(emptyEnvirons),
		owner: make(map[procKey]string), recorded: make(map[procKey]string)}
}

// refresh takes a new snapshot unless the current one is fresh. Called with mu held.
func (pt *procTable) refresh() {
	if time.Since(pt.taken) < snapshotTTL && pt.entries != nil {
		return
	}
	entries, err := host.processes()
	if err != nil {
		return // keep the old snapshot; callers poll again
	}
	pt.entries = entries
	pt.led = leaders(entries)
	pt.taken = time.Now()
	seen := make(map[procKey]string, len(entries))
	unread := make(emptyEnvirons) // only the processes of this snapshot
	pt.unsettle = false
	for _, e := range entries {
		if e.zombie || e.pid == pt.self {
			continue
		}
		k := procKey{e.pid, e.start}
		tag, ok := pt.tags[k]
		if !ok {
			mark, known := readEnvMark(e.pid, pt.session)
			tag = mark.tag
			if !known {
				if first, ok := pt.unread[k]; ok {
					unread[k] = first
				}
				if unread.settling(k, pt.taken) {
					pt.unsettle = true
					continue // read again in the next snapshot
				}
			}
		}
		seen[k] = tag
	}
	pt.tags = seen // drop entries of processes that are gone
	pt.unread = unread
	pt.owner = pt.attributeByAncestry(pt.entries, pt.led)
}

// recordAncestry reads the process table (stat only: no environment is
// read) and records the owner of every process whose parent chain now leads
// to a tool, without replacing the shared snapshot. A stop without cgroup
// mode runs it once, just before its first signal to the tool's group, whose
// death breaks those chains (its later rounds look before they signal); reading the environments of the new processes too would
// delay the signal (by tens of milliseconds under load, measured). Like a
// snapshot, one pass serves every caller for snapshotTTL (a shutdown stops
// every tool at once).
func (pt *procTable) recordAncestry() {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if time.Since(pt.taken) < snapshotTTL || time.Since(pt.ancestryTaken) < snapshotTTL {
		return // a pass that fresh has recorded it
	}
	entries, err := host.processes()
	if err != nil {
		return
	}
	pt.ancestryTaken = time.Now()
	pt.attributeByAncestry(entries, leaders(entries))
}

// attributeByAncestry returns the owner of each process of entries and
// records the owners found through a parent, in one walk over the entries
// (each parent chain is followed once; results are memoised). Records of
// processes absent from entries are dropped. led is leaders(entries), which
// refresh keeps for its snapshot. Called with mu held.
func (pt *procTable) attributeByAncestry(entries []procEntry, led map[int]bool) map[procKey]string {
	groups := pt.groups()                    // after entries were read (see inRunGroup)
	byPid := make(map[int]int, len(entries)) // pid → index in entries
	for i, e := range entries {
		byPid[e.pid] = i
	}
	owner := make(map[procKey]string, len(pt.owner))
	done := make([]bool, len(entries))
	var chain []int
	for i := range entries {
		// Walk up from entry i until an entry whose owner is known (decided
		// earlier in this pass, or a seed), then assign down the chain.
		chain = chain[:0]
		tag := ""
		for j := i; ; {
			if done[j] {
				tag = owner[procKey{entries[j].pid, entries[j].start}]
				break
			}
			e := entries[j]
			k := procKey{e.pid, e.start}
			done[j] = true // also guards against a cycle in a racy snapshot
			if e.pid == pt.self || e.pid <= 1 {
				break // the sidecar and init own nothing by descent
			}
			if t := pt.seedOwner(e, k, groups, led); t != "" {
				owner[k] = t
				tag = t
				break
			}
			chain = append(chain, j)
			p, ok := byPid[e.ppid]
			if !ok || e.ppid == pt.self || e.ppid <= 1 {
				break // an adopted orphan, init's child, or a parent gone
			}
			j = p
		}
		if tag == "" {
			continue
		}
		for _, j := range chain {
			e := entries[j]
			k := procKey{e.pid, e.start}
			owner[k] = tag
			if !e.zombie {
				pt.recorded[k] = tag
			}
		}
	}
	for k := range pt.recorded {
		if _, live := owner[k]; !live {
			delete(pt.recorded, k) // gone (or recycled: another start time)
		}
	}
	return owner
}

// seedOwner is the owner of a process known without its parent: its mark,
// its tool's process group (see inRunGroup), or an owner recorded earlier.
func (pt *procTable) seedOwner(e procEntry, k procKey, groups map[int]groupOwner, led map[int]bool) string {
	if t := pt.tags[k]; t != "" {
		return t
	}
	if g, ok := groups[e.pgid]; ok && inRunGroup(e, e.pgid, g.leader, led) {
		return g.tag
	}
	return pt.recorded[k]
}

// groupOwner is the tool whose current run leads a process group, and
// whether that leader was reaped, as of the call to procTable.groups.
type groupOwner struct {
	tag    string
	leader leaderState
}

// leaderEnd records the reap of a run's main process, the leader of the
// run's process group. The zero value is a leader not reaped.
type leaderEnd struct {
	clock  atomic.Uint64 // host.startClock() just after the reap
	reaped atomic.Bool   // set after clock
}

// mark records the reap; the reaper calls it right after wait4. Only the
// first call counts (a Daemon tool's run reports its daemon's exit too).
func (l *leaderEnd) mark() {
	if l.reaped.Load() {
		return
	}
	l.clock.Store(host.startClock())
	l.reaped.Store(true)
}

// leaderState is a reading of a leaderEnd. A pass over the snapshot reads
// each leader once, after the snapshot was taken, so that it judges every
// process by one state and a leader alive then was alive throughout.
type leaderState struct {
	reaped bool
	clock  uint64 // valid when reaped
}

// load reads l; a nil l is a leader not reaped.
func (l *leaderEnd) load() leaderState {
	if l == nil || !l.reaped.Load() {
		return leaderState{}
	}
	return leaderState{reaped: true, clock: l.clock.Load()}
}

// inRunGroup reports whether e counts as a member of a run through its
// process group pgid (and not by mark or ancestry), given the snapshot's
// led (see leaders) and the state of the run's leader, read after the
// snapshot was taken.
//
// While the leader is unreaped, its group id names the run's group: every
// process in it counts. Once the leader is reaped, the id is free again as
// soon as the rest of the group is gone, and an unrelated process that gets
// the leader's pid may lead a group with that id (pid reuse); the old group
// and a new one with its id never coexist. A process then counts only if
// the group has no leader in the snapshot (ours was reaped, so a leader is
// a stranger) and it started no later than the reap, in the start clock's
// ticks (a stranger starts after the reap). What the group forks after the
// reap counts through its mark or ancestry only (procTable). The one case
// left is a stranger's group whose leader exited within the tick of the
// reap, leaving members.
func inRunGroup(e procEntry, pgid int, leader leaderState, led map[int]bool) bool {
	if e.pgid != pgid {
		return false
	}
	if !leader.reaped {
		return true
	}
	return !led[pgid] && e.start <= leader.clock
}

// leaders is the set of process groups of entries whose leader (the
// process whose pid is the group id, zombie or not) is among them.
func leaders(entries []procEntry) map[int]bool {
	led := make(map[int]bool, len(entries)/2)
	for _, e := range entries {
		if e.pid == e.pgid {
			led[e.pid] = true
		}
	}
	return led
}

// record attributes a live process to a tool from outside the snapshot (an
// adopted orphan found in a tool's cgroup), for as long as it lives.
func (pt *procTable) record(k procKey, tag string) {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	pt.recorded[k] = tag
	pt.owner[k] = tag
}

// unsettled reports whether some process's environment could not be read yet
// (see envSettle): a caller that found no member should look again.
func (pt *procTable) unsettled() bool {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	pt.refresh()
	return pt.unsettle
}

// membersOf lists the live (non-zombie) processes of a tool: those in its
// run's process group (see inRunGroup), those whose environment names the
// tool in this session, and their descendants (see procTable: ancestry,
// recorded or current).
func (pt *procTable) membersOf(k memberKey) []procEntry {
	return pt.membersOfEach([]memberKey{k})[0]
}

// memberKey is what membersOf takes: a run's process group, when its leader
// was reaped (nil: never), and the tool's tag ("" for none).
type memberKey struct {
	pgid int
	tag  string
	end  *leaderEnd
}

// membersOfEach is membersOf for many tools from one snapshot, by index: a
// stats sample of a thousand tools scans the table once, not a thousand
// times (refreshing it whenever it is older than snapshotTTL).
func (pt *procTable) membersOfEach(keys []memberKey) [][]procEntry {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	pt.refresh()
	byGroup := make(map[int][]int, len(keys))
	byTag := make(map[string][]int, len(keys))
	for i, k := range keys {
		byGroup[k.pgid] = append(byGroup[k.pgid], i)
		if k.tag != "" {
			byTag[k.tag] = append(byTag[k.tag], i)
		}
	}
	out := make([][]procEntry, len(keys))
	leader := make([]leaderState, len(keys)) // read after the snapshot
	for i, k := range keys {
		leader[i] = k.end.load()
	}
	for _, e := range pt.entries {
		if e.zombie || e.pid == pt.self {
			continue
		}
		for _, i := range byGroup[e.pgid] {
			if inRunGroup(e, keys[i].pgid, leader[i], pt.led) {
				out[i] = append(out[i], e)
			}
		}
		if len(byTag) == 0 {
			continue
		}
		if tag := pt.owner[procKey{e.pid, e.start}]; tag != "" {
			for _, i := range byTag[tag] {
				if !inRunGroup(e, keys[i].pgid, leader[i], pt.led) { // not already added through its group
					out[i] = append(out[i], e)
				}
			}
		}
	}
	return out
}

// leftovers lists every live process the session is answerable for: those
// carrying its mark or attributed to a tool, and every descendant of the
// sidecar (adopted orphans and theirs) but the processes named in spare and
// their descendants. It is what a shutdown kills after the tools' stops.
func (pt *procTable) leftovers(spare map[int]bool) []procEntry {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	pt.refresh()
	byPid := make(map[int]procEntry, len(pt.entries))
	for _, e := range pt.entries {
		byPid[e.pid] = e
	}
	fromSelf := make(map[int]bool, len(pt.entries)) // memo: descends from the sidecar (not via spare)
	var below func(pid, depth int) bool
	below = func(pid, depth int) bool {
		e, ok := byPid[pid]
		if !ok || depth > len(byPid) || spare[pid] || pid <= 1 {
			return false
		}
		if v, ok := fromSelf[pid]; ok {
			return v
		}
		v := e.ppid == pt.self || below(e.ppid, depth+1)
		fromSelf[pid] = v
		return v
	}
	var out []procEntry
	for _, e := range pt.entries {
		if e.zombie || e.pid == pt.self || e.pid <= 1 || spare[e.pid] {
			continue
		}
		k := procKey{e.pid, e.start}
		if pt.tags[k] != "" || pt.owner[k] != "" || below(e.pid, 0) {
			out = append(out, e)
		}
	}
	return out
}

// adopted lists the live children of the sidecar in the shared snapshot
// (taken now unless one is fresh: a stop in progress may have just taken
// it), with the tool each belongs to ("" for none). Which of them the
// sidecar started itself (tools, the watchdog) only its monitor knows.
func (pt *procTable) adopted() (children []procEntry, owners []string) {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	pt.refresh()
	for _, e := range pt.entries {
		if e.ppid == pt.self && !e.zombie {
			children = append(children, e)
			owners = append(owners, pt.owner[procKey{e.pid, e.start}])
		}
	}
	return children, owners
}
