package tests

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
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

func TestConcurrentCreatesOfOneTagStartExactlyOneTool(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx := ctxT(t)
	const n = 12
	errs := make(chan error, n)
	infos := make(chan client.ProcessInfo, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			info, err := sc.Create(ctx, client.CreateParams{Tag: "only-one", Argv: []string{"/bin/sleep", "1000"}})
			if err != nil {
				errs <- err
			} else {
				infos <- info
			}
		}()
	}
	wg.Wait()
	close(errs)
	close(infos)
	if len(infos) != 1 {
		t.Errorf("%d of %d concurrent creates of one tag succeeded, want 1", len(infos), n)
	}
	for err := range errs {
		wantCode(t, "losing concurrent create", err, client.CodeTagInUse)
	}
	// And the OS agrees: exactly one process carries the tag.
	count := 0
	for _, pid := range allPids() {
		if env, err := environ(pid); err == nil && env[envSidecar] == sc.mark && env["PROCMGR_TAG"] == "only-one" {
			count++
		}
	}
	if count != 1 {
		t.Errorf("%d processes carry PROCMGR_TAG=only-one, want 1", count)
	}
}

func TestConcurrentCreatesOfManyTagsAllStart(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx := ctxT(t)
	const n = 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	pids := map[int]string{}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tag := fmt.Sprintf("many-%02d", i)
			info, err := sc.Create(ctx, client.CreateParams{Tag: tag, Argv: []string{"/bin/sleep", "1000"}})
			if err != nil {
				t.Errorf("create %s: %v", tag, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if other, dup := pids[info.Pid]; dup {
				t.Errorf("%s and %s got the same pid %d", tag, other, info.Pid)
			}
			pids[info.Pid] = tag
		}()
	}
	wg.Wait()
	for pid, tag := range pids {
		env, err := environ(pid)
		if err != nil || env["PROCMGR_TAG"] != tag {
			t.Errorf("pid %d: PROCMGR_TAG %q (%v), want %s", pid, env["PROCMGR_TAG"], err, tag)
		}
	}
	l, err := sc.List(ctx)
	if err != nil || len(l) != n {
		t.Errorf("list has %d tools (%v), want %d", len(l), err, n)
	}
}

func TestConcurrentStopsOfOneTagAllSeeTheSameEnd(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx := ctxT(t)
	info := sc.create(client.CreateParams{Tag: "shared", Argv: sh(`trap "" TERM; /bin/sleep 1000 & wait`), StopTimeout: client.Ptr(0.5)})
	ids := waitGroupSize(t, info.Pgid, 2)
	const n = 6
	type res struct {
		info client.ProcessInfo
		err  error
	}
	results := make(chan res, n)
	for i := 0; i < n; i++ {
		go func() {
			p, err := sc.Stop(ctx, client.StopParams{Tag: "shared"})
			// Every stop returns only when nothing of the group remains.
			if err == nil {
				assertGoneNow(t, "group when a concurrent stop returned", ids)
			}
			results <- res{p, err}
		}()
	}
	for i := 0; i < n; i++ {
		r := <-results
		// docs/protocol.md: concurrent stops of one tag share the work and the
		// result. (A -32002 for a stop that arrived after the tag was released
		// would also be defensible; it is reported, not hidden.)
		if r.err != nil {
			t.Errorf("concurrent stop: %v", r.err)
		} else if r.info.Pid != info.Pid || r.info.Signal == nil || *r.info.Signal != "SIGKILL" {
			t.Errorf("concurrent stop returned %+v", r.info)
		}
	}
}

func TestPendingWaitReturnsWhenToolIsStoppedOrSidecarShutsDown(t *testing.T) {
	t.Parallel()
	// Raw bytes, so that the waits are on the wire before anything else: a
	// client call in a goroutine gives no such order.
	r := startRaw(t, false)
	r.mustResult(1, "create", map[string]any{"tag": "waited", "argv": []string{"/bin/sleep", "1000"}}, nil)
	r.mustResult(2, "create", map[string]any{"tag": "waited2", "argv": []string{"/bin/sleep", "1000"}}, nil)
	r.sendWait(r.frame(request(3, "wait", map[string]any{"tag": "waited"})))
	r.sendWait(r.frame(request(4, "wait", map[string]any{"tag": "waited2"})))
	// Fence: hello is answered in order on the reading goroutine, so once its
	// reply is here both waits have been read and handed to their handlers.
	r.mustResult(5, "hello", nil, nil)
	r.mustResult(6, "stop", map[string]any{"tag": "waited"}, nil)
	var info client.ProcessInfo
	m := r.until("3")
	if m.Error != nil || json.Unmarshal(m.Result, &info) != nil || info.State != "exited" || info.Signal == nil || *info.Signal != "SIGTERM" {
		t.Errorf("wait on a stopped tool = %s", m)
	}
	r.sendWait(r.frame(request(7, "shutdown", nil)))
	// The pending wait is answered, or the connection ends with the sidecar:
	// either way it does not hang.
	end := time.After(callTimeout)
	for answered := false; !answered; {
		select {
		case m := <-r.msgs:
			answered = m.Method == "" && string(m.ID) == "4"
		case <-r.done:
			answered = true
		case <-end:
			t.Fatal("wait did not return when the sidecar shut down")
		}
	}
}

// manyWaits is more blocking calls than docs/protocol.md's in-flight limit
// (1024), past which the sidecar stops reading its input.
const manyWaits = 1100

func sendManyWaits(r *rawConn, tag string) {
	var b strings.Builder
	for i := 0; i < manyWaits; i++ {
		b.WriteString(request(100000+i, "wait", map[string]any{"tag": tag}) + "\n")
	}
	r.sendWait([]byte(b.String()))
}

func TestStopGetsThroughMoreBlockingCallsThanTheInFlightLimit(t *testing.T) {
	t.Parallel()
	r := startRaw(t, false)
	var info client.ProcessInfo
	r.mustResult(1, "create", map[string]any{"tag": "waited", "argv": []string{"/bin/sleep", "1000"}}, &info)
	sendManyWaits(r, "waited")
	// A host waiting on a tool from many threads must still be able to stop
	// it; otherwise neither the waits nor the stop ever return.
	r.sendWait(r.frame(request(2, "stop", map[string]any{"tag": "waited"})))
	if _, ok := r.within("2", 10*time.Second); !ok {
		t.Fatalf("stop unanswered 10 s after %d pending waits: the sidecar stopped reading its input", manyWaits)
	}
	for i := 0; i < manyWaits; i++ {
		if _, ok := r.within(strconv.Itoa(100000+i), 10*time.Second); !ok {
			t.Fatalf("wait %d never returned after the tool was stopped", i)
		}
	}
}

func TestStdinEOFIsNoticedWithMoreBlockingCallsThanTheInFlightLimit(t *testing.T) {
	t.Parallel()
	r := startRaw(t, false)
	var info client.ProcessInfo
	r.mustResult(1, "create", map[string]any{"tag": "waited", "argv": []string{"/bin/sleep", "1000"}}, &info)
	tool := mustIdentify(t, info.Pid)
	sendManyWaits(r, "waited")
	r.in.Close() // the host says goodbye
	waitGone(t, "tool after EOF on stdin with many calls in flight", 3*time.Second+graceMargin, []procID{tool})
}
