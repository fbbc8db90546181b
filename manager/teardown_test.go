package manager

import (
	"testing"
	"time"
)

func TestTeardownStopsAtTheFirstEmptyLookWithoutSIGKILL(t *testing.T) {
	terms, kills := 0, 0
	ok := teardown{
		term:  func() bool { terms++; return terms == 3 },
		grace: time.Minute,
		kill:  func() bool { kills++; return true },
	}.run()
	if !ok || terms != 3 || kills != 0 {
		t.Errorf("run = %v after %d term and %d kill calls; want true, 3, 0", ok, terms, kills)
	}
}

func TestTeardownEscalatesAfterTheGraceAndGivesUpAfterItsKillBound(t *testing.T) {
	var termAt, killAt []time.Time
	start := time.Now()
	ok := teardown{
		term:    func() bool { termAt = append(termAt, time.Now()); return false },
		grace:   50 * time.Millisecond,
		kill:    func() bool { killAt = append(killAt, time.Now()); return false },
		killFor: 100 * time.Millisecond,
	}.run()
	took := time.Since(start)
	if ok {
		t.Fatal("run reported an empty set that never was")
	}
	if len(killAt) == 0 || killAt[0].Sub(termAt[0]) < 50*time.Millisecond {
		t.Errorf("SIGKILL step began %v after the first term, want after the 50ms grace", killAt[0].Sub(termAt[0]))
	}
	if took < 150*time.Millisecond || took > 2*time.Second {
		t.Errorf("run took %v, want grace+killFor (150ms) and bounded", took)
	}
	// Waits back off to 20 ms: over 150 ms, a few dozen calls at most.
	if n := len(termAt) + len(killAt); n > 40 {
		t.Errorf("%d calls in %v: polled hot", n, took)
	}
}

// A tool's main process reaped during the grace closes wake: that ends one
// wait early, not every wait after it.
func TestTeardownWakesOnceOnAClosedChannel(t *testing.T) {
	wake := make(chan struct{})
	close(wake)
	terms := 0
	teardown{
		term:    func() bool { terms++; return false },
		grace:   100 * time.Millisecond,
		kill:    func() bool { return true },
		killFor: time.Second,
		wake:    wake,
	}.run()
	if terms > 30 {
		t.Errorf("%d term calls in a 100ms grace: a closed wake channel made it spin", terms)
	}
}

// A closed abort ends the teardown after the call under way: no call
// follows it, not even the SIGKILL step's.
func TestTeardownEndsWithoutAnotherCallOnceAborted(t *testing.T) {
	abort := make(chan struct{})
	terms, kills := 0, 0
	start := time.Now()
	d := teardown{
		term: func() bool {
			terms++
			if terms == 2 {
				close(abort)
			}
			return false
		},
		grace: time.Minute,
		kill:  func() bool { kills++; return false },
		abort: abort,
	}
	if ok := d.run(); ok || !d.aborted() {
		t.Fatalf("run = %v, aborted = %v; want false, true", ok, d.aborted())
	}
	if terms != 2 || kills != 0 {
		t.Errorf("%d term and %d kill calls; want 2, 0", terms, kills)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("run took %v after the abort, want it to end at once", took)
	}
}
