package manager

import (
	"syscall"
	"time"
)

// State is a tool's life-cycle state.
type State string

const (
	StateRunning  State = "running"  // the main process has not exited
	StateStopping State = "stopping" // a stop is in progress
	StateExited   State = "exited"   // the main process has exited (and any stop has finished)
	StateFatal    State = "fatal"    // it kept failing: max_restarts were used up inside the window
)

// Info is a snapshot of one tool.
type Info struct {
	Tag       string
	Argv      []string
	Pid       int
	Pgid      int
	State     State
	Alive     bool // the main process has not exited
	Exited    bool // ExitCode, Signal and ExitedAt are meaningful
	ExitCode  int  // -1 when killed by a signal
	Signal    syscall.Signal
	Restarts  int // how many times the restart policy started it again
	StartedAt time.Time
	ExitedAt  time.Time
	// Orphans counts the processes of the tool the sidecar adopted (their
	// parent exited and they were re-parented to it), as of its last look.
	Orphans int
}
