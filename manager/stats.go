package manager

import (
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Unknown is the value of a Stats figure the OS does not show: on macOS
// (see stats_darwin.go), or PSS where a member's smaps_rollup is unreadable.
const Unknown = -1

// Stats is what a tool costs: its whole tree, the main process with every
// live member the manager attributes to it (the same membership stop and
// signal use: process group, cgroup, environment marks).
//
// For a run with no live member left, Processes is 0, Pids is empty, Threads
// is 0, CPU is the run's total and RSS/PSS are those of the last sample taken
// while it had members (Unknown if none was).
type Stats struct {
	Processes int // live members
	Threads   int // sum over live members; Unknown where not shown
	// CPU is user + system time: the live members' own and that of the
	// children they waited for, plus what the run's reaped members used (the
	// main process's exit rusage, and orphans the sidecar reaped that an
	// earlier sample saw as members). It never decreases within a run.
	// Unknown while members live on a platform that does not show it.
	CPU time.Duration
	RSS int64 // resident bytes, summed over live members; Unknown where not shown
	// PSS is the proportional set size in bytes, summed over live members:
	// unlike RSS it does not count a page shared by members twice. Unknown
	// when some member's smaps_rollup cannot be read.
	PSS    int64
	Uptime time.Duration // since the run started; for a finished run, how long it lasted
	Pids   []int         // the live members, the main process first
}

// procUsage is one process's figures as the OS shows them (platform code
// fills it; Unknown where it cannot).
type procUsage struct {
	ok      bool // the process was still there (and the same one)
	cpu     time.Duration
	threads int
	rss     int64
	pss     int64
}

// runAccount is what one run's tree has cost so far, beyond what its live
// members show.
type runAccount struct {
	orphanCPU atomic.Int64 // ns used by members the monitor reaped (orphans)

	mu   sync.Mutex
	last Stats     // the last sample with members
	at   time.Time // when it was taken; zero: never
	pids []int     // its members, for accounting.seen
}

// accounting attributes the CPU time of orphans the monitor reaps (from their
// exit rusage) to the run they were last seen a member of. An orphan never
// seen by a sample is not attributed: it never counted in a figure shown, so
// no figure shrinks when it goes.
type accounting struct {
	once    sync.Once
	mu      sync.Mutex
	seen    map[int]seenMember // pid → the run it was a member of at its last sample
	pruneAt int
}

type seenMember struct {
	t *tool
	r *run
}

// orphanExited is the monitor's untracked-reap hook: quick, under its lock.
func (a *accounting) orphanExited(e Exit) {
	a.mu.Lock()
	sm, ok := a.seen[e.Pid]
	delete(a.seen, e.Pid)
	a.mu.Unlock()
	if ok {
		sm.r.acct.orphanCPU.Add(int64(e.CPU))
	}
}

// note records the members of a sample of r, forgetting those of its
// previous sample that are gone.
func (a *accounting) note(t *tool, r *run, old, pids []int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.seen == nil {
		a.seen = make(map[int]seenMember)
	}
	for _, pid := range old {
		if a.seen[pid].r == r {
			delete(a.seen, pid)
		}
	}
	for _, pid := range pids {
		a.seen[pid] = seenMember{t, r}
	}
}

// pruneSeen forgets members of tools that were released: a stopped tool is
// never sampled again, so its last members would stay forever.
func (m *Manager) pruneSeen() {
	m.acct.mu.Lock()
	n := len(m.acct.seen)
	due := n > m.acct.pruneAt
	m.acct.mu.Unlock()
	if !due {
		return
	}
	m.mu.Lock()
	live := make(map[*tool]bool, len(m.tools))
	for _, t := range m.tools {
		if t != nil {
			live[t] = true
		}
	}
	m.mu.Unlock()
	m.acct.mu.Lock()
	defer m.acct.mu.Unlock()
	for pid, sm := range m.acct.seen {
		if !live[sm.t] {
			delete(m.acct.seen, pid)
		}
	}
	m.acct.pruneAt = 2*len(m.acct.seen) + 1024
}

// Stats samples the tool's tree now. ErrNoSuchTag for an unknown tag.
func (m *Manager) Stats(tag string) (Stats, error) {
	t, err := m.lookup(tag)
	if err != nil {
		return Stats{}, err
	}
	return m.sample([]*tool{t})[0], nil
}

// ListStats is List with every tool's Stats, sampled in one pass spread
// over the CPUs.
func (m *Manager) ListStats() ([]Info, []Stats) {
	tools := m.sortedTools()
	stats := m.sample(tools)
	infos := make([]Info, len(tools))
	for i, t := range tools {
		infos[i] = t.info()
	}
	return infos, stats
}

// sampleJob is one tool's part of a sample.
type sampleJob struct {
	t       *tool
	r       *run
	main    int // the process the run follows (run.mainPid), listed first
	reaped  bool
	exit    Exit
	members []procEntry
	listed  bool // members were found already (procTable.membersOfEach)
	usage   []procUsage
}

func (m *Manager) sample(tools []*tool) []Stats {
	m.acct.once.Do(func() { m.mon.OnUntracked(m.acct.orphanExited) })
	jobs := make([]sampleJob, len(tools))
	var keys []memberKey // tools without a cgroup: found in one snapshot
	var keyed []int
	for i, t := range tools {
		t.mu.Lock()
		jobs[i] = sampleJob{t: t, r: t.run, main: t.run.mainPid(), reaped: t.run.reaped, exit: t.run.exit}
		t.mu.Unlock()
		if t.cg == nil && len(tools) > 1 {
			keys = append(keys, jobs[i].r.members(t.tag))
			keyed = append(keyed, i)
		}
	}
	if len(keys) > 0 {
		for k, members := range m.procs.membersOfEach(keys) {
			jobs[keyed[k]].members = members
			jobs[keyed[k]].listed = true
		}
	}
	// Spread over the CPUs: listing a tool's cgroup and reading its members'
	// figures is a few /proc reads each, and smaps_rollup costs the kernel a
	// walk of the process's page tables.
	workers := min(runtime.GOMAXPROCS(0), 1+len(jobs)/16)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for {
				i := int(next.Add(1)) - 1
				if i >= len(jobs) {
					return
				}
				j := &jobs[i]
				if !j.listed {
					j.members = m.membersOf(j.t, j.r)
				}
				j.usage = make([]procUsage, len(j.members))
				for k, e := range j.members {
					j.usage[k] = readUsage(e.pid, e.start, buf)
				}
			}
		}()
	}
	wg.Wait()
	now := time.Now()
	out := make([]Stats, len(jobs))
	for i := range jobs {
		out[i] = m.assemble(&jobs[i], now)
	}
	m.pruneSeen()
	return out
}

// assemble sums one tool's members and folds in its run's account.
func (m *Manager) assemble(j *sampleJob, now time.Time) Stats {
	r := j.r
	s := Stats{Pids: []int{}}
	var cpu time.Duration
	var rss, pss int64
	cpuKnown, rssKnown, pssKnown := true, true, true
	for k, u := range j.usage {
		if !u.ok {
			continue // gone since it was listed
		}
		s.Pids = append(s.Pids, j.members[k].pid)
		if u.cpu < 0 {
			cpuKnown = false
		}
		cpu += u.cpu
		if u.threads < 0 || s.Threads < 0 {
			s.Threads = Unknown
		} else {
			s.Threads += u.threads
		}
		if u.rss < 0 {
			rssKnown = false
		}
		rss += u.rss
		if u.pss < 0 {
			pssKnown = false
		}
		pss += u.pss
	}
	sort.Slice(s.Pids, func(a, b int) bool {
		if (s.Pids[a] == j.main) != (s.Pids[b] == j.main) {
			return s.Pids[a] == j.main
		}
		return s.Pids[a] < s.Pids[b]
	})
	s.Processes = len(s.Pids)
	dead := time.Duration(r.acct.orphanCPU.Load())
	if j.reaped {
		dead += j.exit.CPU
	}

	r.acct.mu.Lock()
	last, lastAt, old := r.acct.last, r.acct.at, r.acct.pids
	if s.Processes > 0 {
		s.CPU, s.RSS, s.PSS = Unknown, Unknown, Unknown
		if cpuKnown {
			s.CPU = max(cpu+dead, last.CPU) // a member reaped unseen must not shrink it
		}
		if rssKnown {
			s.RSS = rss
		}
		if pssKnown {
			s.PSS = pss
		}
		s.Uptime = now.Sub(r.startedAt)
		r.acct.last, r.acct.at, r.acct.pids = s, now, s.Pids
	} else {
		s.CPU = max(dead, last.CPU)
		s.RSS, s.PSS = Unknown, Unknown
		if !lastAt.IsZero() {
			s.RSS, s.PSS = last.RSS, last.PSS
		}
		end := lastAt
		if j.reaped && j.exit.At.After(end) {
			end = j.exit.At
		}
		if !j.reaped {
			end = now // the main process is unreaped but not seen: exiting just now
		}
		s.Uptime = max(end.Sub(r.startedAt), 0)
		r.acct.pids = nil
	}
	r.acct.mu.Unlock()
	if s.Processes > 0 || len(old) > 0 {
		m.acct.note(j.t, r, old, s.Pids)
	}
	return s
}
