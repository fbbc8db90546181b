package manager

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// tool is one tag's tool across its restarts. The fields above mu never
// change after Create; the rest is guarded by mu.
type tool struct {
	tag         string
	spec        Spec
	path        string   // resolved executable
	env         []string // with the PROCMGR marks
	stopSignal  syscall.Signal
	stopTimeout time.Duration
	cg          *toolCgroup // one cgroup for every run; nil without cgroup mode
	stdout      *capture    // nil unless stdout is captured
	stderr      *capture    // nil unless stderr is captured on its own
	settled     chan struct{}

	runMu sync.Mutex // held while a restart starts a run; Stop waits for it

	orphans atomic.Int32 // adopted orphans attributed to the tool, as last seen (orphans.go)

	mu        sync.Mutex
	run       *run // the current (or last) run of the main process
	state     State
	restarts  int           // restarts so far
	recent    []time.Time   // restart times inside the policy window
	timer     *time.Timer   // a pending restart
	stdin     *os.File      // write end of the current run's stdin pipe
	stopDone  chan struct{} // made when a stop begins, closed when it is done
	stopBegun chan struct{} // closed when a stop begins: a readiness wait ends, a restart's clean-up too
	clearing  *clearing     // a restart's clean-up of the ended run in flight (restart.go)
	final     Info
	isSettled bool
}

// run is one start of the tool's main process.
type run struct {
	pid       int // the launched process, also its process-group id: each run leads its own group
	startedAt time.Time
	exited    chan struct{} // closed when the main process has been reaped
	leader    leaderEnd     // the reap of the launched process, the group's leader (set before exited closes)
	exit      Exit          // valid once exited is closed; guarded by tool.mu
	reaped    bool          // guarded by tool.mu
	// main and mainPgid are the daemon a Daemon tool's launcher left behind
	// (daemon.go), once followed; 0 until then. Guarded by tool.mu.
	main, mainPgid int
	acct           runAccount // what the run's tree has cost (stats.go)
}

// members is the key of the run's members for procTable.membersOf.
func (r *run) members(tag string) memberKey {
	return memberKey{pgid: r.pid, tag: tag, end: &r.leader}
}

// mainPid is the process the run follows: the daemon once adopted, else the
// launched process.
func (r *run) mainPid() int {
	if r.main != 0 {
		return r.main
	}
	return r.pid
}

// closeCaptures waits briefly for the pumps to drain (the tree is gone, so
// every write end is closed) and closes the capture files.
func (t *tool) closeCaptures() {
	for _, c := range []*capture{t.stdout, t.stderr} {
		if c == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c.waitEOF(ctx)
		cancel()
		c.close()
	}
}

func (t *tool) current() *run {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.run
}

// settleLocked marks the tool as done for good: no run is alive and none
// will start (no restart pending, or it is fatal, or stopped).
func (t *tool) settleLocked() {
	if !t.isSettled {
		t.isSettled = true
		close(t.settled)
	}
}

func (t *tool) info() Info {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.infoLocked()
}

func (t *tool) infoLocked() Info {
	r := t.run
	in := Info{
		Tag:       t.tag,
		Argv:      t.spec.Argv,
		Pid:       r.mainPid(),
		Pgid:      r.pid,
		State:     t.state,
		Alive:     !r.reaped,
		Restarts:  t.restarts,
		StartedAt: r.startedAt,
		Orphans:   int(t.orphans.Load()),
	}
	if r.main != 0 {
		in.Pgid = r.mainPgid
	}
	if r.reaped {
		in.Exited = true
		in.ExitCode = r.exit.Code
		in.Signal = r.exit.Signal
		in.ExitedAt = r.exit.At
	}
	return in
}
