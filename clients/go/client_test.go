package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as a fake sidecar (FAKE_PROCMGR=1), so the client's
// transport can be tested without the real one. The fake answers "echo" with
// its params, "fail" with an error, "notify" with N notifications and then a
// reply, "slow" after 300 ms, "exit" by exiting without a reply, and writes
// replies to concurrent requests in reverse order of arrival for "pair". It
// notifies "received" when a "slow" or "create" request arrives. "stall"
// replies, then stops reading until SIGUSR1; "create" is answered (-32005,
// reason "stopped") when a "stop" arrives; "methods" returns the methods
// received so far, in order.
func TestMain(m *testing.M) {
	if os.Getenv("FAKE_PROCMGR") == "1" {
		fakeSidecar()
		return
	}
	os.Exit(m.Run())
}

func fakeSidecar() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<10), 16<<20)
	resume := make(chan os.Signal, 1)
	signal.Notify(resume, syscall.SIGUSR1)
	var received []string
	var create any // the id of a create waiting for its stop
	var wmu sync.Mutex
	write := func(v any) {
		b, _ := json.Marshal(v)
		wmu.Lock()
		os.Stdout.Write(append(b, '\n'))
		wmu.Unlock()
	}
	var held []map[string]any
	for in.Scan() {
		var req map[string]any
		if json.Unmarshal(in.Bytes(), &req) != nil {
			continue
		}
		id := req["id"]
		received = append(received, fmt.Sprint(req["method"]))
		switch req["method"] {
		case "stall":
			write(map[string]any{"jsonrpc": "2.0", "id": id, "result": nil})
			<-resume
		case "methods":
			write(map[string]any{"jsonrpc": "2.0", "id": id, "result": received})
		case "create":
			create = id
			write(map[string]any{"jsonrpc": "2.0", "method": "received", "params": map[string]any{"method": "create"}})
		case "stop":
			if create != nil {
				write(map[string]any{"jsonrpc": "2.0", "id": create, "error": map[string]any{
					"code": -32005, "message": "not ready", "data": map[string]any{"reason": "stopped", "tag": "t"}}})
				create = nil
			}
			write(map[string]any{"jsonrpc": "2.0", "id": id, "result": map[string]any{"tag": "t"}})
		case "failreason":
			write(map[string]any{"jsonrpc": "2.0", "id": id, "error": map[string]any{
				"code": -32002, "message": "no such tag", "data": map[string]any{"reason": "no_such_tag", "tag": "x"}}})
		case "echo":
			write(map[string]any{"jsonrpc": "2.0", "id": id, "result": req["params"]})
		case "fail":
			write(map[string]any{"jsonrpc": "2.0", "id": id, "error": map[string]any{
				"code": -32002, "message": "no such tag", "data": map[string]any{"tag": "x"}}})
		case "notify":
			for i := 0; i < 10; i++ {
				write(map[string]any{"jsonrpc": "2.0", "method": "exited", "params": map[string]any{"tag": fmt.Sprint(i)}})
			}
			write(map[string]any{"jsonrpc": "2.0", "id": id, "result": nil})
		case "slow":
			// Say the request arrived, so a test can wait for that.
			write(map[string]any{"jsonrpc": "2.0", "method": "received", "params": map[string]any{"method": "slow"}})
			go func() {
				time.Sleep(300 * time.Millisecond)
				write(map[string]any{"jsonrpc": "2.0", "id": id, "result": "slow"})
			}()
		case "pair":
			held = append(held, req)
			if len(held) == 2 {
				for i := 1; i >= 0; i-- {
					write(map[string]any{"jsonrpc": "2.0", "id": held[i]["id"], "result": held[i]["params"]})
				}
				held = nil
			}
		case "nullfirst":
			write(map[string]any{"jsonrpc": "2.0", "id": nil, "error": map[string]any{"code": -32700, "message": "parse error"}})
			write(map[string]any{"jsonrpc": "2.0", "id": id, "result": req["params"]})
		case "garbage":
			os.Stdout.Write([]byte("this is not json\n"))
			write(map[string]any{"jsonrpc": "2.0", "id": id, "result": true})
		case "exit":
			os.Exit(3)
		}
	}
}

func startFake(t *testing.T, buf int) *Client {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c, err := Start(context.Background(), Options{
		Binary:             exe,
		Env:                append(os.Environ(), "FAKE_PROCMGR=1"),
		NotificationBuffer: buf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Kill(); c.Wait() })
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestCallReturnsResultAndRPCError(t *testing.T) {
	c := startFake(t, 0)
	var got map[string]string
	if err := c.Call(ctx(t), "echo", map[string]string{"a": "b"}, &got); err != nil || got["a"] != "b" {
		t.Fatalf("echo: %v %v", got, err)
	}
	var empty map[string]any
	if err := c.Call(ctx(t), "echo", nil, &empty); err != nil || empty == nil || len(empty) != 0 {
		t.Fatalf("nil params must be sent as {}: %v %v", empty, err)
	}
	err := c.Call(ctx(t), "fail", nil, nil)
	var re *RPCError
	if !errors.As(err, &re) || re.Code != CodeNoSuchTag || string(re.Data) != `{"tag":"x"}` {
		t.Fatalf("fail: %#v", err)
	}
}

func TestConcurrentCallsAreMatchedByID(t *testing.T) {
	c := startFake(t, 0)
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var got int
			if err := c.Call(ctx(t), "pair", i, &got); err != nil || got != i {
				t.Errorf("pair %d: got %d, %v", i, got, err)
			}
		}()
	}
	wg.Wait()
}

func TestCallHonoursContext(t *testing.T) {
	c := startFake(t, 0)
	cx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Call(cx, "slow", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want deadline exceeded, got %v", err)
	}
	// The late reply is discarded, and the connection still works.
	var s string
	if err := c.Call(ctx(t), "slow", nil, &s); err != nil || s != "slow" {
		t.Fatalf("slow: %q %v", s, err)
	}
}

func TestNotificationsAreBoundedAndDropsCounted(t *testing.T) {
	c := startFake(t, 4)
	if err := c.Call(ctx(t), "notify", nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := len(c.Notifications()); n != 4 {
		t.Fatalf("buffered %d notifications, want 4", n)
	}
	if d := c.DroppedNotifications(); d != 6 {
		t.Fatalf("dropped %d, want 6", d)
	}
	n := <-c.Notifications()
	if n.Method != "exited" {
		t.Fatalf("method %q", n.Method)
	}
	if p, err := n.Exited(); err != nil || p.Tag != "0" {
		t.Fatalf("params %+v %v", p, err)
	}
}

func TestSidecarGoneFailsPendingAndLaterCalls(t *testing.T) {
	c := startFake(t, 0)
	slow := make(chan error, 1)
	go func() { slow <- c.Call(ctx(t), "slow", nil, nil) }()
	// The exit must come after the slow request has reached the fake.
	select {
	case n := <-c.Notifications():
		if n.Method != "received" {
			t.Fatalf("first notification %q, want the fake's \"received\"", n.Method)
		}
	case err := <-slow:
		t.Fatalf("slow call returned before it was received: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the fake did not report receiving the slow request within 20 s")
	}
	if err := c.Call(ctx(t), "exit", nil, nil); !errors.Is(err, ErrSidecarGone) {
		t.Fatalf("exit: %v", err)
	}
	if err := <-slow; !errors.Is(err, ErrSidecarGone) {
		t.Fatalf("pending call: %v", err)
	}
	if err := c.Call(ctx(t), "echo", nil, nil); !errors.Is(err, ErrSidecarGone) {
		t.Fatalf("later call: %v", err)
	}
	if err := c.Wait(); err == nil || c.ProcessState().ExitCode() != 3 {
		t.Fatalf("wait: %v", err)
	}
}

func TestNonJSONOutputIsRecordedAsViolation(t *testing.T) {
	c := startFake(t, 0)
	var ok bool
	if err := c.Call(ctx(t), "garbage", nil, &ok); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if v := c.ProtocolViolations(); len(v) != 1 {
		t.Fatalf("violations %q", v)
	}
}

func TestOutputMarshalling(t *testing.T) {
	p := CreateParams{Tag: "t", Argv: []string{"x"}, Stdout: OutputInherit, Stderr: OutputFile("/f", true), StopTimeout: Ptr(1.5)}
	b, _ := json.Marshal(p)
	want := `{"tag":"t","argv":["x"],"stdout":"inherit","stderr":{"file":"/f","append":true},"stop_timeout":1.5}`
	if string(b) != want {
		t.Fatalf("got %s\nwant %s", b, want)
	}
}

func TestNullIDRepliesAreStrayAndCallZeroStillMatches(t *testing.T) {
	c := startFake(t, 0)
	// jsonrpc2 numbers calls from 0 and would read id null as 0: the stream
	// must keep a null-id reply away from the Conn.
	var got string
	if err := c.Call(ctx(t), "nullfirst", "zero", &got); err != nil || got != "zero" {
		t.Fatalf("call after a null-id reply: %q %v", got, err)
	}
	if n := c.StrayReplies(); n != 1 {
		t.Fatalf("stray replies %d, want 1 (the id-null one)", n)
	}
}

func TestRPCErrorReasonIsDataReason(t *testing.T) {
	c := startFake(t, 0)
	var re *RPCError
	if err := c.Call(ctx(t), "failreason", nil, nil); !errors.As(err, &re) || re.Reason() != ReasonNoSuchTag {
		t.Errorf("error %v: reason %q, want %q", err, re.Reason(), ReasonNoSuchTag)
	}
	for _, data := range []string{``, `{"tag":"x"}`, `[1]`, `"no_such_tag"`, `{"reason":5}`} {
		if r := (&RPCError{Code: CodeNoSuchTag, Data: json.RawMessage(data)}).Reason(); r != "" {
			t.Errorf("data %s: reason %q, want none", data, r)
		}
	}
}

// methodsSeen asks the fake which methods it received, in order.
func methodsSeen(t *testing.T, c *Client) []string {
	t.Helper()
	var got []string
	if err := c.Call(ctx(t), "methods", nil, &got); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestAbandonedCreateThatWentOutIsStopped(t *testing.T) {
	c := startFake(t, 0)
	cctx, cancel := context.WithCancel(ctx(t))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Create(cctx, CreateParams{Tag: "t", Argv: []string{"x"}})
		errc <- err
	}()
	for n := range c.Notifications() { // the fake has the create
		if n.Method == "received" && strings.Contains(string(n.Params), "create") {
			break
		}
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Create = %v, want ctx's error", err)
	}
	if got, want := methodsSeen(t, c), []string{"create", "stop", "methods"}; !slices.Equal(got, want) {
		t.Errorf("the sidecar received %q, want %q", got, want)
	}
}

func TestAbandonedCreateNeverWrittenSendsNoStop(t *testing.T) {
	c := startFake(t, 0)
	if err := c.Call(ctx(t), "stall", nil, nil); err != nil {
		t.Fatal(err)
	}
	// The fake no longer reads: a request larger than the pipe (64 KiB) holds the
	// turn to write until it reads again, so the create waits behind it.
	echoed := make(chan error, 1)
	go func() {
		echoed <- c.Call(ctx(t), "echo", map[string]string{"pad": strings.Repeat("x", 1<<20)}, nil)
	}()
	for deadline := time.Now().Add(10 * time.Second); len(c.sending) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the echo never started to be written")
		}
	}
	cctx, cancel := context.WithTimeout(ctx(t), 50*time.Millisecond)
	defer cancel()
	created := make(chan error, 1)
	go func() {
		_, err := c.Create(cctx, CreateParams{Tag: "t", Argv: []string{"x"}})
		created <- err
	}()
	select {
	case err := <-created:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Create = %v, want ctx's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Create did not return after its ctx ended, while its request was still unwritten")
	}
	syscall.Kill(c.Pid(), syscall.SIGUSR1)
	if err := <-echoed; err != nil {
		t.Fatal(err)
	}
	if got, want := methodsSeen(t, c), []string{"stall", "echo", "methods"}; !slices.Equal(got, want) {
		t.Errorf("the sidecar received %q, want %q: an unwritten create is neither sent nor stopped", got, want)
	}
}

// writeInProgress reports whether a request is being written to the sidecar
// now (the stream's write lock is held).
func writeInProgress(c *Client) bool {
	if c.stream.wmu.TryLock() {
		c.stream.wmu.Unlock()
		return false
	}
	return true
}

func TestAbandonedCreateWhoseWriteOutlastsTheStopTimeoutIsStoppedOnceWritten(t *testing.T) {
	saved := cancelStopTimeout
	cancelStopTimeout = 50 * time.Millisecond
	t.Cleanup(func() { cancelStopTimeout = saved })
	c := startFake(t, 0)
	if err := c.Call(ctx(t), "stall", nil, nil); err != nil {
		t.Fatal(err)
	}
	// The fake no longer reads: a create larger than the pipe (64 KiB) stalls
	// in its write until the fake reads again.
	cctx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	created := make(chan error, 1)
	go func() {
		_, err := c.Create(cctx, CreateParams{Tag: "t", Argv: []string{"x"},
			Env: map[string]string{"PAD": strings.Repeat("x", 1<<20)}})
		created <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); !writeInProgress(c); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the create never started to be written")
		}
	}
	cancel()
	select {
	case err := <-created:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Create = %v, want ctx's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Create did not return within 10 s of its ctx's end while its write stalled")
	}
	// The write completes once the fake reads again: the create reaches it,
	// and a stop for the tag must follow, or the tool would hold the tag.
	syscall.Kill(c.Pid(), syscall.SIGUSR1)
	var got []string
	for deadline := time.Now().Add(10 * time.Second); !slices.Contains(got, "stop"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no stop reached the sidecar within 10 s of the create's write completing; it received %q", got)
		}
		got = slices.DeleteFunc(methodsSeen(t, c), func(m string) bool { return m == "methods" })
	}
	if want := []string{"stall", "create", "stop"}; !slices.Equal(got, want) {
		t.Errorf("the sidecar received %q, want %q", got, want)
	}
}
