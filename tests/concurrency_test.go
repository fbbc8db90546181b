package tests

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	client "procmgr/clients/go"
)

func TestCallsAreServedWhileASlowStopIsInFlight(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx := ctxT(t)
	slow := sc.create(client.CreateParams{Tag: "slow", Argv: sh(`trap "" TERM; exec /bin/sleep 1000`), StopTimeout: client.Ptr(3.0)})
	waitExe(t, slow.Pid, "sleep")
	other := sc.create(client.CreateParams{Tag: "other", Argv: []string{"/bin/sleep", "1000"}})

	stopDone := make(chan struct{})
	var stopInfo client.ProcessInfo
	var stopErr error
	go func() {
		stopInfo, stopErr = sc.Stop(ctx, client.StopParams{Tag: "slow"})
		close(stopDone)
	}()
	// The stop is in flight once the tool shows as "stopping"; fetch must
	// answer meanwhile.
	for {
		f, err := sc.Fetch(ctx, "slow")
		if err != nil {
			t.Fatal(err)
		}
		if f != nil && f.State == "stopping" {
			break
		}
		select {
		case <-stopDone:
			t.Fatalf("stop finished before fetch ever showed state \"stopping\" (last %+v)", f)
		case <-time.After(10 * time.Millisecond):
		}
	}

	var wg sync.WaitGroup
	var calls, late atomic.Int64
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				var err error
				switch (g + i) % 6 {
				case 0:
					var r bool
					r, err = sc.Running(ctx, "slow")
					if err == nil && !r {
						err = fmt.Errorf("running(slow) = false while its stop is in flight")
					}
				case 1:
					var r bool
					r, err = sc.IsAlive(ctx, "other")
					if err == nil && !r {
						err = fmt.Errorf("is_alive(other) = false")
					}
				case 2:
					_, err = sc.Hello(ctx)
				case 3:
					_, err = sc.List(ctx)
				case 4:
					var f *client.ProcessInfo
					f, err = sc.Fetch(ctx, "other")
					if err == nil && (f == nil || f.Pid != other.Pid) {
						err = fmt.Errorf("fetch(other) = %+v", f)
					}
				case 5:
					tag := fmt.Sprintf("c-%d-%d", g, i)
					if _, err = sc.Create(ctx, client.CreateParams{Tag: tag, Argv: []string{"/bin/sleep", "1000"}}); err == nil {
						_, err = sc.Stop(ctx, client.StopParams{Tag: tag})
					}
				}
				calls.Add(1)
				if err != nil {
					t.Errorf("goroutine %d call %d: %v", g, i, err)
				}
				select {
				case <-stopDone:
					late.Add(1)
				default:
				}
			}
		}()
	}
	wg.Wait()
	if n := late.Load(); n > 0 {
		t.Errorf("%d of %d calls were answered only after the 3 s stop finished: calls are not served concurrently", n, calls.Load())
	}
	select {
	case <-stopDone:
	case <-time.After(3*time.Second + graceMargin):
		t.Fatal("stop did not return")
	}
	if stopErr != nil || stopInfo.Signal == nil || *stopInfo.Signal != "SIGKILL" {
		t.Errorf("stop = %+v, %v; want killed by SIGKILL after its timeout", stopInfo, stopErr)
	}
	assertGoneNow(t, "slow tool when stop returned", []procID{mustIdentifyOrZero(slow.Pid)})
	if l, err := sc.List(ctx); err != nil || len(l) != 1 || l[0].Tag != "other" {
		t.Errorf("list after the storm = %+v, %v; want only 'other'", l, err)
	}
}
