package manager

import "runtime"

// spawner runs every fork on one OS thread that never exits.
//
// Why: the parent-death signal (Pdeathsig) a tool carries fires when the
// *thread* that forked it exits, not the process (golang/go#27505). The Go
// runtime retires threads freely, and kills a locked thread whose goroutine
// returns; a goroutine that locks its thread and never returns keeps the
// signal tied to the sidecar's own death.
type spawner struct {
	work chan func()
}

// newSpawner also makes signals the sidecar was started with ignored go back
// to their default action in tools (spawn_linux.go): a tool starts with a
// clean slate of signals, as under systemd or posix_spawn's SETSIGDEF.
func newSpawner() *spawner {
	defaultIgnoredSignals()
	s := &spawner{work: make(chan func())}
	go s.loop()
	return s
}

func (s *spawner) loop() {
	runtime.LockOSThread() // never unlocked: this thread lives as long as the process
	emptySignalMask()      // for good: a tool inherits this thread's mask (spawn_linux.go)
	for f := range s.work {
		f()
	}
	select {} // the channel is never closed; should it be, keep the thread anyway
}

// do runs f on the spawner thread and returns when f has returned.
func (s *spawner) do(f func()) {
	done := make(chan struct{})
	s.work <- func() { defer close(done); f() }
	<-done
}
