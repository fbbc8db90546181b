package manager

import (
	"bytes"
	"os"
	"sync"
	"time"
)

// Environment variables that mark a tool and every descendant that keeps its
// environment, so members that left the tool's process group can still be found.
const (
	EnvTag     = "PROCMGR_TAG"
	EnvSession = "PROCMGR_SESSION"
)

// procTable answers "which live processes belong to this tool?" from one OS
// snapshot shared by every caller for a few milliseconds, so a shutdown that
// stops a thousand tools at once scans the process table once per round, not a
// thousand times. Environment attribution is read once per process (keyed by
// pid and start time) and cached.
type procTable struct {
	session string
	self    int

	mu      sync.Mutex
	taken   time.Time
	entries []procEntry
	tags    map[procKey]string // tag of this session's processes; "" for others
	// unread: processes whose environment read empty, since when.
	// They are read again in every snapshot for envSettle, then taken as not ours.
	unread   map[procKey]time.Time
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

func newProcTable(session string) *procTable {
	return &procTable{session: session, self: os.Getpid(), tags: make(map[procKey]string), unread: make(map[procKey]time.Time)}
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
	pt.taken = time.Now()
	seen := make(map[procKey]string, len(entries))
	unread := make(map[procKey]time.Time)
	pt.unsettle = false
	for _, e := range entries {
		if e.zombie || e.pid == pt.self {
			continue
		}
		k := procKey{e.pid, e.start}
		tag, ok := pt.tags[k]
		if !ok {
			var known bool
			if tag, known = pt.attribute(e.pid); !known {
				since, ok := pt.unread[k]
				if !ok {
					since = pt.taken
				}
				if pt.taken.Sub(since) < envSettle {
					unread[k] = since // read again in the next snapshot
					pt.unsettle = true
					continue
				}
			}
		}
		seen[k] = tag
	}
	pt.tags = seen // drop entries of processes that are gone
	pt.unread = unread
}

// unsettled reports whether some process's environment could not be read yet
// (see envSettle): a caller that found no member should look again.
func (pt *procTable) unsettled() bool {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	pt.refresh()
	return pt.unsettle
}

// attribute reads the process's environment and returns its PROCMGR_TAG when
// its PROCMGR_SESSION is ours, or "". known is false when the environment
// read empty: a process in the middle of an execve shows an empty environ for
// a moment (see envSettle), so such a reading must not be cached. One that
// cannot be read at all (gone, another user's) is not ours.
func (pt *procTable) attribute(pid int) (tag string, known bool) {
	env, err := host.environ(pid)
	if err != nil {
		return "", true
	}
	if len(env) == 0 {
		return "", !hasExecutable(pid) // a kernel thread has none, and no environment ever
	}
	var ours bool
	for _, kv := range bytes.Split(env, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(EnvSession+"=")); ok {
			ours = string(v) == pt.session
		} else if v, ok := bytes.CutPrefix(kv, []byte(EnvTag+"=")); ok {
			tag = string(v)
		}
	}
	if !ours {
		return "", true
	}
	return tag, true
}

// membersOf lists the live (non-zombie) processes of a tool: those in its
// process group and those whose environment names the tool in this session.
func (pt *procTable) membersOf(pgid int, tag string) []procEntry {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	pt.refresh()
	var out []procEntry
	for _, e := range pt.entries {
		if e.zombie || e.pid == pt.self {
			continue
		}
		if e.pgid == pgid || (tag != "" && pt.tags[procKey{e.pid, e.start}] == tag) {
			out = append(out, e)
		}
	}
	return out
}

// sessionMembers lists every live process that carries this session's mark,
// whatever its tag.
func (pt *procTable) sessionMembers() []int {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	pt.refresh()
	var out []int
	for _, e := range pt.entries {
		if !e.zombie && e.pid != pt.self && pt.tags[procKey{e.pid, e.start}] != "" {
			out = append(out, e.pid)
		}
	}
	return out
}
