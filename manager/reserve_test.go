package manager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
)

func TestReleaseFreesTheTagAndLeavesNothingToCreate(t *testing.T) {
	marker := fmt.Sprintf("4%06d", os.Getpid()%1000000)
	spec := Spec{Tag: "reserved", Argv: []string{"sleep", marker}}
	if _, err := testMgr.Reserve(Spec{Tag: "reserved"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Reserve without argv: err = %v, want ErrInvalid", err)
	}
	r, err := testMgr.Reserve(spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testMgr.Reserve(spec); !errors.Is(err, ErrTagInUse) {
		t.Fatalf("second Reserve: err = %v, want ErrTagInUse", err)
	}
	if _, err := testMgr.Create(context.Background(), spec); !errors.Is(err, ErrTagInUse) {
		t.Fatalf("Create of a reserved tag: err = %v, want ErrTagInUse", err)
	}
	if testMgr.Running("reserved") {
		t.Fatal("a reserved tag with no tool yet reports running")
	}
	r.Release()
	r.Release() // idempotent: the tag is not freed twice
	if _, err := r.Create(context.Background()); !errors.Is(err, ErrReservationDone) {
		t.Fatalf("Create after Release: err = %v, want ErrReservationDone", err)
	}
	if left := withMarker(t, marker); len(left) > 0 {
		t.Fatalf("Create after Release started %v", left)
	}
	if _, err := testMgr.Stop(context.Background(), "reserved", 0, 0); !errors.Is(err, ErrNoSuchTag) {
		t.Fatalf("Stop of a released tag: err = %v, want ErrNoSuchTag", err)
	}
	// The tag is free again.
	r2, err := testMgr.Reserve(spec)
	if err != nil {
		t.Fatalf("Reserve after Release: %v", err)
	}
	in, err := r2.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r2.Release() // a no-op after Create: the tool keeps its tag
	if _, err := r2.Create(context.Background()); !errors.Is(err, ErrReservationDone) {
		t.Fatalf("second Create: err = %v, want ErrReservationDone", err)
	}
	if !testMgr.Running("reserved") {
		t.Fatal("Release after Create freed the tool's tag")
	}
	if _, err := testMgr.Stop(context.Background(), "reserved", 0, 0); err != nil {
		t.Fatal(err)
	}
	if !gone(in.Pid) {
		t.Fatalf("tool %d still exists after stop", in.Pid)
	}
}

// A stop that comes between Reserve and Create finds the tool, whichever
// of the two gets to the manager first: it waits for the reserved tag.
func TestStopOfAReservedTagStopsTheToolItsCreateStarts(t *testing.T) {
	r, err := testMgr.Reserve(Spec{Tag: "reserved-stop", Argv: []string{"sleep", "30"}})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		in  Info
		err error
	}
	stopped := make(chan result, 1)
	go func() {
		in, err := testMgr.Stop(context.Background(), "reserved-stop", 0, 0)
		stopped <- result{in, err}
	}()
	in, err := r.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := <-stopped // bounded: stop waits at most reservedWait, then the stop timeout
	if got.err != nil || got.in.Pid != in.Pid {
		t.Fatalf("stop = %+v, %v; want the stopped tool %d", got.in, got.err, in.Pid)
	}
	if !gone(in.Pid) {
		t.Fatalf("tool %d still exists after stop", in.Pid)
	}
}
