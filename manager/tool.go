package manager

import (
	"sync"
	"syscall"
	"time"
)

// tool is one started tool. pid and the fields above mu never change after
// the spawn; the rest is guarded by mu.
type tool struct {
	tag         string
	argv        []string
	pid         int // also the process-group id: a tool leads its own group
	stopSignal  syscall.Signal
	stopTimeout time.Duration
	startedAt   time.Time
	cg          *toolCgroup   // nil without cgroup mode
	exited      chan struct{} // closed when the main process has been reaped

	mu       sync.Mutex
	state    State
	exit     Exit
	reaped   bool
	stopDone chan struct{} // non-nil once a stop began; closed when it ended
	final    Info          // the snapshot a finished stop returned
}

// markExited is the tool's Monitor callback: called once, from the reaper.
func (t *tool) markExited(e Exit) Info {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.exit = e
	t.reaped = true
	if t.state == StateRunning {
		t.state = StateExited
	}
	close(t.exited)
	return t.infoLocked()
}

func (t *tool) info() Info {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.infoLocked()
}

func (t *tool) infoLocked() Info {
	in := Info{
		Tag:       t.tag,
		Argv:      t.argv,
		Pid:       t.pid,
		Pgid:      t.pid,
		State:     t.state,
		Alive:     !t.reaped,
		StartedAt: t.startedAt,
	}
	if t.reaped {
		in.Exited = true
		in.ExitCode = t.exit.Code
		in.Signal = t.exit.Signal
		in.ExitedAt = t.exit.At
	}
	return in
}
