package manager

import "time"

// killWait bounds how long a teardown SIGKILLs round after round. Only a
// process the sidecar may not kill (another uid) or one stuck in the kernel
// (state D) outlives it; the caller then returns and logs the survivors.
const killWait = 5 * time.Second

// teardown is the one "signal, wait, escalate until empty" sequence of
// procmgr: a tool's stop and the clean-up of an ended run before its restart
// (stopTree), the members a cgroup stop left outside the cgroup (killStrays),
// Shutdown's sweep and the session watchdog's sweep are each one teardown.
// Its steps, in order:
//
//  1. term, the polite signal: called once, then again after each wait
//     until it reports the set empty or grace (counted from its first
//     return) has passed. term decides whom it signals on later calls (a
//     stop gives each latecomer the stop signal once; the watchdog only
//     looks). nil skips the step.
//  2. kill: SIGKILL to whatever is found, called round after round in the
//     same way until it reports the set empty or killFor (0: killWait) has
//     passed.
//
// Each call both looks and acts, and reports whether its look found the set
// empty (what "empty" takes — a reaped main process, settled environments,
// a quiet spell — is the caller's).
//
// Guarantees: run returns, whatever the processes do: every wait ends by its
// step's deadline, so it takes at most grace + killFor plus the time of the
// calls themselves. It returns true only when a call reported the set
// empty; false means members outlived SIGKILL and the caller says so. Waits
// start at 0.5 ms and double up to 20 ms: a set that dies at once is seen
// gone at once, one that does not is not polled hot. wake (optional: a
// tool's main process being reaped) ends the wait it falls in early, once —
// a closed channel would otherwise end every wait at once. abort (optional:
// a stop beginning during a restart's clean-up) ends the teardown: run
// returns false without another call once it is closed (a call under way
// finishes first), and the caller tells that from survivors by abort.
type teardown struct {
	term    func() (empty bool)
	grace   time.Duration
	kill    func() (empty bool)
	killFor time.Duration
	wake    <-chan struct{}
	abort   <-chan struct{}
}

// run carries out the steps; true: the set is empty.
func (d teardown) run() bool {
	wake := d.wake
	if d.term != nil && d.step(d.term, d.grace, &wake) {
		return true
	}
	killFor := d.killFor
	if killFor == 0 {
		killFor = killWait
	}
	return d.step(d.kill, killFor, &wake)
}

// aborted reports whether abort is closed.
func (d teardown) aborted() bool {
	select {
	case <-d.abort:
		return true
	default:
		return false
	}
}

// step calls round, then waits and calls it again, until it reports the set
// empty (true), or the bound, counted from the first call's return, passes
// or abort closes (false). A wake that fires is set to nil.
func (d teardown) step(round func() bool, bound time.Duration, wake *<-chan struct{}) bool {
	if d.aborted() {
		return false
	}
	if round() {
		return true
	}
	deadline := time.Now().Add(bound)
	pause := 500 * time.Microsecond
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		timer := time.NewTimer(min(pause, left))
		select {
		case <-*wake:
			*wake = nil
		case <-d.abort:
			timer.Stop()
			return false
		case <-timer.C:
		}
		timer.Stop()
		pause = min(pause*2, 20*time.Millisecond)
		if round() {
			return true
		}
	}
}
