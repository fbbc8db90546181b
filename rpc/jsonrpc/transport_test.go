package jsonrpc

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// harness is a Server over os.Pipes (so the input can be polled for a
// hang-up, as the sidecar's stdin is), with methods for the tests below.
type harness struct {
	srv    *Server
	stream *Stream
	in     *os.File // the peer's end of the input
	out    *os.File // the peer's end of the output
	r      *bufio.Reader
	served chan struct{}
	block  chan struct{} // "block" and "hold" calls wait on it
	// replied is closed by the "after" call's result once it was replied to.
	replied chan struct{}
	// admissions records what the "ordered" method's admit and undo did.
	admissions admissions
}

type waitParams struct {
	Pad string `json:"pad"`
}

func (waitParams) WaitsLong() bool { return true }

type maybeParams struct {
	Lookup bool `json:"lookup"`
}

func (p maybeParams) IsLookup() bool { return p.Lookup }

// afterResult runs its func once its reply is handed to the stream.
type afterResult struct {
	Done  bool `json:"done"`
	after func()
}

func (r afterResult) AfterReply() { r.after() }

type nested struct {
	Inner struct {
		Name string `json:"name"`
	} `json:"inner"`
	List []struct {
		Key string `json:"key"`
	} `json:"list"`
}

func newHarness(t *testing.T, c StreamConfig) *harness {
	t.Helper()
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	if c.MaxMessage == 0 {
		c.MaxMessage = 1 << 20
	}
	h := &harness{in: inW, out: outR, r: bufio.NewReaderSize(outR, 1<<20), served: make(chan struct{}), block: make(chan struct{}),
		replied: make(chan struct{})}
	h.srv = NewServer(c.Log, c.Budget)
	Handle(h.srv, "echo", func(_ context.Context, p echoParams) (echoParams, error) { return p, nil })
	HandleInline(h.srv, "lookup", func(_ context.Context, p echoParams) (echoParams, error) { return p, nil })
	HandleInline(h.srv, "nested", func(_ context.Context, p nested) (string, error) { return p.Inner.Name, nil })
	HandleInline(h.srv, "nan", func(context.Context, struct{}) (float64, error) { return math.NaN(), nil })
	Handle(h.srv, "control", func(context.Context, struct{}) (string, error) { return "done", nil })
	// Says how many calls were in progress off the reading goroutine: 0 when
	// it runs on it.
	Handle(h.srv, "after", func(context.Context, struct{}) (afterResult, error) {
		return afterResult{Done: true, after: func() { close(h.replied) }}, nil
	})
	Handle(h.srv, "maybe", func(context.Context, maybeParams) (int64, error) { return h.srv.inflight.Load(), nil })
	Handle(h.srv, "block", func(ctx context.Context, _ waitParams) (string, error) {
		select {
		case <-h.block:
		case <-ctx.Done():
		}
		return "released", nil
	})
	Handle(h.srv, "big", func(_ context.Context, p struct {
		Size int `json:"size"`
	}) (string, error) {
		return strings.Repeat("x", p.Size), nil
	})
	registerOrdered(h)
	h.stream, err = NewStream(inR, outW, c)
	if err != nil {
		t.Fatal(err)
	}
	go func() { h.srv.Serve(context.Background(), h.stream); close(h.served) }()
	t.Cleanup(func() {
		select {
		case <-h.block:
		default:
			close(h.block)
		}
		inW.Close()
		select {
		case <-h.served:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10 s of the input's end")
		}
		h.srv.Close()
		outR.Close()
		inR.Close()
		outW.Close()
	})
	return h
}

func (h *harness) send(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(h.in, s); err != nil {
		t.Fatal(err)
	}
}

// reply reads the next line-framed message, failing after a generous deadline.
func (h *harness) reply(t *testing.T) (testReply, []byte) {
	t.Helper()
	type res struct {
		line []byte
		err  error
	}
	ch := make(chan res, 1)
	go func() { l, err := h.r.ReadBytes('\n'); ch <- res{l, err} }()
	select {
	case got := <-ch:
		if got.err != nil {
			t.Fatalf("read reply: %v", got.err)
		}
		if !utf8.Valid(got.line) {
			t.Fatalf("reply is not valid UTF-8: %q", got.line)
		}
		var rep testReply
		if err := json.Unmarshal(got.line, &rep); err != nil {
			t.Fatalf("reply %q is not JSON: %v", got.line, err)
		}
		return rep, got.line
	case <-time.After(10 * time.Second):
		t.Fatal("no reply within 10 s")
	}
	return testReply{}, nil
}

func (h *harness) wantError(t *testing.T, code int, id string, msgPart string) {
	t.Helper()
	rep, line := h.reply(t)
	if rep.Error == nil || rep.Error.Code != code || string(rep.ID) != id || !strings.Contains(rep.Error.Message, msgPart) ||
		rep.Error.Data.Reason != reasons[code] {
		t.Fatalf("reply %s, want error %d (reason %q) id %s mentioning %q", line, code, reasons[code], id, msgPart)
	}
}

func (h *harness) wantResult(t *testing.T, id, part string) {
	t.Helper()
	rep, line := h.reply(t)
	if rep.Error != nil || string(rep.ID) != id || !strings.Contains(string(rep.Result), part) {
		t.Fatalf("reply %s, want id %s with a result containing %q", line, id, part)
	}
}

// Probe finding: member names were matched case-insensitively.
func TestMemberAndFieldNamesAreCaseSensitive(t *testing.T) {
	h := newHarness(t, StreamConfig{})
	h.send(t, `{"JSONRPC":"2.0","ID":7,"METHOD":"lookup","PARAMS":{"TEXT":"x"}}`+"\n")
	h.wantError(t, CodeInvalidRequest, "null", `"ID"`)
	h.send(t, `{"jsonrpc":"2.0","id":7,"Method":"lookup"}`+"\n")
	h.wantError(t, CodeInvalidRequest, "7", `"Method"`)
	h.send(t, `{"jsonrpc":"2.0","id":8,"method":"lookup","params":{"TEXT":"x"}}`+"\n")
	h.wantError(t, CodeInvalidParams, "8", `"TEXT"`)
	h.send(t, `{"jsonrpc":"2.0","id":9,"method":"nested","params":{"inner":{"NAME":"x"}}}`+"\n")
	h.wantError(t, CodeInvalidParams, "9", `inner.NAME`)
	h.send(t, `{"jsonrpc":"2.0","id":10,"method":"nested","params":{"list":[{"key":"a"},{"Key":"b"}]}}`+"\n")
	h.wantError(t, CodeInvalidParams, "10", `list.1.Key`)
	h.send(t, `{"jsonrpc":"2.0","id":11,"method":"nested","params":{"inner":{"name":"ok"},"list":[{"key":"a"}]}}`+"\n")
	h.wantResult(t, "11", "ok")
}

// Duplicate member names are refused, at the top level and in params.
func TestDuplicateMemberNamesAreRefused(t *testing.T) {
	h := newHarness(t, StreamConfig{})
	h.send(t, `{"jsonrpc":"2.0","id":1,"method":"lookup","method":"echo"}`+"\n")
	h.wantError(t, CodeInvalidRequest, "1", `"method" appears twice`)
	h.send(t, `{"jsonrpc":"2.0","id":2,"method":"lookup","params":{"text":"a","te\u0078t":"b"}}`+"\n")
	h.wantError(t, CodeInvalidParams, "2", `"text" appears twice`)
	h.send(t, `{"jsonrpc":"2.0","id":3,"method":"nested","params":{"inner":{"name":"a","name":"b"}}}`+"\n")
	h.wantError(t, CodeInvalidParams, "3", `"name" appears twice`)
	h.send(t, `{"jsonrpc":"2.0","id":4,"method":"nested","params":{"list":[{"key":"a"},{"key":"b"}]}}`+"\n")
	h.wantResult(t, "4", `""`) // the same name in two objects is fine
}

// Probe finding: an id with invalid UTF-8 was echoed raw.
func TestEveryReplyIsValidUTF8(t *testing.T) {
	h := newHarness(t, StreamConfig{})
	h.send(t, "{\"jsonrpc\":\"2.0\",\"id\":\"a\xffb\",\"method\":\"lookup\"}\n")
	h.wantError(t, CodeParseError, "null", "UTF-8")
	h.send(t, "\xfe\xff garbage\n")
	h.wantError(t, CodeParseError, "null", "UTF-8")
	h.send(t, `{"jsonrpc":"2.0","id":"\udc00","method":"lookup","params":{"text":"\ud800"}}`+"\n")
	h.wantResult(t, `"`+"\ufffd"+`"`, "\ufffd") // lone surrogates come back as U+FFFD
	h.send(t, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"nope\xc3\"}\n")
	h.wantError(t, CodeParseError, "null", "UTF-8")
}

// Probe finding: --max-message 1024 served a 1025-byte line.
func TestMaxMessageIsExactInBothFramings(t *testing.T) {
	const max = 1024
	body := func(n int) string { // a request of exactly n bytes
		head := `{"jsonrpc":"2.0","id":1,"method":"lookup","params":{"text":"`
		tail := `"}}`
		return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
	}
	t.Run("line", func(t *testing.T) {
		h := newHarness(t, StreamConfig{MaxMessage: max})
		h.send(t, body(max)+"\n")
		h.wantResult(t, "1", "xxx")
		h.send(t, body(max)+"\r\n") // the terminator is not counted
		h.wantResult(t, "1", "xxx")
		h.send(t, body(max+1)+"\n")
		h.wantError(t, CodeInvalidRequest, "null", "1024-byte limit")
		h.send(t, body(max+1)+"\r\n")
		h.wantError(t, CodeInvalidRequest, "null", "1024-byte limit")
		h.send(t, body(100)+"\n")
		h.wantResult(t, "1", "xxx")
	})
	t.Run("header", func(t *testing.T) {
		h := newHarness(t, StreamConfig{MaxMessage: max, Framing: FramingHeader})
		h.send(t, fmt.Sprintf("Content-Length: %d\r\n\r\n%s", max, body(max)))
		h.wantHeaderResult(t, "1")
		h.send(t, fmt.Sprintf("Content-Length: %d\r\n\r\n%s", max+1, body(max+1)))
		rep := h.headerReply(t)
		if rep.Error == nil || rep.Error.Code != CodeInvalidRequest {
			t.Fatalf("a %d-byte body with --max-message %d: %+v", max+1, max, rep)
		}
		h.send(t, fmt.Sprintf("Content-Length: %d\r\n\r\n%s", 100, body(100)))
		h.wantHeaderResult(t, "1")
	})
}

func (h *harness) headerReply(t *testing.T) testReply {
	t.Helper()
	type res struct {
		body []byte
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		n := -1
		for {
			line, err := h.r.ReadString('\n')
			if err != nil {
				ch <- res{nil, err}
				return
			}
			line = strings.TrimRight(line, "\r\n")
			if line == "" {
				break
			}
			fmt.Sscanf(line, "Content-Length: %d", &n)
		}
		b := make([]byte, n)
		_, err := io.ReadFull(h.r, b)
		ch <- res{b, err}
	}()
	select {
	case got := <-ch:
		if got.err != nil {
			t.Fatalf("read reply: %v", got.err)
		}
		var rep testReply
		if err := json.Unmarshal(got.body, &rep); err != nil || !utf8.Valid(got.body) {
			t.Fatalf("reply %q is not UTF-8 JSON: %v", got.body, err)
		}
		return rep
	case <-time.After(10 * time.Second):
		t.Fatal("no reply within 10 s")
	}
	return testReply{}
}

func (h *harness) wantHeaderResult(t *testing.T, id string) {
	t.Helper()
	if rep := h.headerReply(t); rep.Error != nil || string(rep.ID) != id {
		t.Fatalf("reply %+v (error %+v), want a result for id %s", rep, rep.Error, id)
	}
}

// Probe finding: a header-framed body with leading whitespace was refused.
func TestHeaderBodyMayStartWithWhitespace(t *testing.T) {
	h := newHarness(t, StreamConfig{Framing: FramingHeader})
	for _, b := range []string{` {"jsonrpc":"2.0","id":1,"method":"lookup"}`, "\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"lookup\"}\r\n"} {
		h.send(t, fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(b), b))
		h.wantHeaderResult(t, "1")
	}
}

// Probe finding: a huge Content-Length was never answered.
func TestHugeContentLengthIsAnsweredBeforeItsBody(t *testing.T) {
	h := newHarness(t, StreamConfig{Framing: FramingHeader, MaxMessage: 1024})
	h.send(t, "Content-Length: 1000000000000\r\n\r\n") // no body follows
	rep := h.headerReply(t)
	if rep.Error == nil || rep.Error.Code != CodeInvalidRequest || string(rep.ID) != "null" || !strings.Contains(rep.Error.Message, "1000000000000 bytes") {
		t.Fatalf("reply %+v (error %+v)", rep, rep.Error)
	}
}

// Probe finding: a Content-Length shorter than its body left the stream
// answering "missing Content-Length" until an extra CRLF came.
func TestHeaderStreamResynchronisesAfterAShortContentLength(t *testing.T) {
	h := newHarness(t, StreamConfig{Framing: FramingHeader})
	b := `{"jsonrpc":"2.0","id":1,"method":"lookup"}`
	good := fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(b), b)
	h.send(t, fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(b)-3, b)) // 3 bytes left over
	if rep := h.headerReply(t); rep.Error == nil || rep.Error.Code != CodeParseError {
		t.Fatalf("a truncated body: %+v", rep)
	}
	h.send(t, good)
	if rep := h.headerReply(t); rep.Error == nil || rep.Error.Code != CodeParseError || !strings.Contains(rep.Error.Message, "skipped") {
		t.Fatalf("the left-over bytes: %+v (error %+v)", rep, rep.Error)
	}
	h.wantHeaderResult(t, "1") // the frame right after them is served
	h.send(t, "garbage line\r\n"+good)
	if rep := h.headerReply(t); rep.Error == nil || rep.Error.Code != CodeParseError {
		t.Fatalf("a garbage line: %+v", rep)
	}
	h.wantHeaderResult(t, "1")
	h.send(t, good)
	h.wantHeaderResult(t, "1")
}

// Probe finding: with stdout unread, replies written on the reading
// goroutine stopped it, so EOF went unnoticed.
func TestInputEndIsNoticedWhileTheOutputIsUnread(t *testing.T) {
	h := newHarness(t, StreamConfig{})
	var b strings.Builder
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":%d,"method":"lookup","params":{"text":"%s"}}`+"\n", i, strings.Repeat("y", 200))
	}
	go io.WriteString(h.in, b.String()) // more replies than a pipe holds
	h.closeInputAndWaitServe(t)
}

// Past the budget, writes wait; closing the input still ends it, although
// the reader has not reached EOF (it is held up behind a write).
func TestInputHangUpIsNoticedWhenTheBudgetIsSpent(t *testing.T) {
	h := newHarness(t, StreamConfig{Budget: 64 << 10})
	var b strings.Builder
	for i := 0; i < 200; i++ {
		fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":%d,"method":"lookup","params":{"text":"%s"}}`+"\n", i, strings.Repeat("z", 4000))
	}
	go io.WriteString(h.in, b.String()) // 800 kB of replies: > pipe + budget
	waitFor(t, "a write to wait for room", func() bool { return h.stream.out.isBlocked() })
	h.closeInputAndWaitServe(t)
}

func (h *harness) closeInputAndWaitServe(t *testing.T) {
	t.Helper()
	time.Sleep(0) // nothing to wait for: the input is closed with data in flight
	h.in.Close()
	select {
	case <-h.served:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return within 10 s of the input's end, with the output unread")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 10 s waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Probe finding: unread replies were held without bound.
func TestUnwrittenRepliesStayWithinTheBudget(t *testing.T) {
	const budget, size = 256 << 10, 64 << 10
	h := newHarness(t, StreamConfig{Budget: budget})
	var peak int
	var mu sync.Mutex
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			h.stream.out.mu.Lock()
			q := h.stream.out.queued
			h.stream.out.mu.Unlock()
			mu.Lock()
			peak = max(peak, q)
			mu.Unlock()
			time.Sleep(100 * time.Microsecond)
		}
	}()
	defer close(stop)
	go func() {
		for i := 0; i < 30; i++ { // 30 replies of 64 kB: 2 MB, unread
			fmt.Fprintf(h.in, `{"jsonrpc":"2.0","id":%d,"method":"big","params":{"size":%d}}`+"\n", i, size)
		}
	}()
	waitFor(t, "writes to wait for room", func() bool { return h.stream.out.isBlocked() })
	mu.Lock()
	p := peak
	mu.Unlock()
	if p > budget+size+100 {
		t.Fatalf("%d bytes queued for an unread peer, budget %d", p, budget)
	}
	// Reading again drains everything.
	for i := 0; i < 30; i++ {
		if rep, line := h.reply(t); rep.Error != nil {
			t.Fatalf("reply %d: %.200s", i, line)
		}
	}
}

// Probe finding: pending calls held their (padded) requests without bound.
func TestRequestBytesHeldByCallsAreBounded(t *testing.T) {
	const budget = 1 << 20
	h := newHarness(t, StreamConfig{Budget: budget, MaxMessage: 1 << 20})
	pad := strings.Repeat("p", 300<<10)
	for i := 0; i < 3; i++ { // 900 kB held: fits
		fmt.Fprintf(h.in, `{"jsonrpc":"2.0","id":%d,"method":"block","params":{"pad":"%s"}}`+"\n", i, pad)
	}
	fmt.Fprintf(h.in, `{"jsonrpc":"2.0","id":9,"method":"block","params":{"pad":"%s"}}`+"\n", pad)
	h.wantError(t, CodeServerBusy, "9", "bytes")
	h.send(t, `{"jsonrpc":"2.0","id":10,"method":"control"}`+"\n")
	h.wantResult(t, "10", "done")
	close(h.block)
	for i := 0; i < 3; i++ {
		h.reply(t)
	}
}

// Probe finding: 4096 pending waits took the room stop/signal/shutdown need.
func TestLongWaitsNeverStarveControlCalls(t *testing.T) {
	h := newHarness(t, StreamConfig{})
	h.fillWaits(t)
	h.send(t, `{"jsonrpc":"2.0","id":"over","method":"block"}`+"\n")
	h.wantError(t, CodeServerBusy, `"over"`, "long waits")
	h.send(t, `{"jsonrpc":"2.0","id":"c","method":"control"}`+"\n")
	h.wantResult(t, `"c"`, "done")
	h.send(t, `{"jsonrpc":"2.0","id":"l","method":"lookup","params":{"text":"still"}}`+"\n")
	h.wantResult(t, `"l"`, "still")
	close(h.block)
	for i := 0; i < MaxWaitingCalls; i++ {
		h.reply(t)
	}
}

// Probe finding: notifications were dropped although the host read them.
func TestNoNotificationIsDroppedWhileThePeerReads(t *testing.T) {
	h := newHarness(t, StreamConfig{})
	const n = 10000
	go func() {
		for i := 0; i < n; i++ {
			h.srv.NotifyGroup(func(notify func(string, any)) {
				notify("exited", map[string]int{"i": i})
				notify("state", map[string]int{"seq": i + 1})
			})
		}
	}()
	got := make(chan error, 1)
	go func() {
		for i := 0; i < 2*n; i++ {
			line, err := h.r.ReadBytes('\n')
			if err != nil {
				got <- err
				return
			}
			want := fmt.Sprintf(`"method":"state","params":{"seq":%d}`, i/2+1)
			if i%2 == 0 {
				want = fmt.Sprintf(`"method":"exited","params":{"i":%d}`, i/2)
			}
			if !strings.Contains(string(line), want) {
				got <- fmt.Errorf("notification %d is %s, want %s", i, line, want)
				return
			}
		}
		got <- nil
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("not every notification arrived within 60 s")
	}
	h.srv.nmu.Lock()
	d := h.srv.dropped
	h.srv.nmu.Unlock()
	if d != 0 {
		t.Fatalf("%d notifications dropped while the peer read", d)
	}
}

// Past the budget (a peer that does not read), a group is dropped whole,
// and Notify never blocks.
func TestNotificationGroupsAreDroppedWholeForAPeerThatDoesNotRead(t *testing.T) {
	h := newHarness(t, StreamConfig{Budget: 64 << 10})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 5000; i++ {
			h.srv.NotifyGroup(func(notify func(string, any)) {
				notify("exited", strings.Repeat("e", 100))
				notify("state", strings.Repeat("s", 100))
			})
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("NotifyGroup blocked on a peer that does not read")
	}
	h.srv.nmu.Lock()
	d := h.srv.dropped
	h.srv.nmu.Unlock()
	if d == 0 || d%2 != 0 {
		t.Fatalf("%d notifications dropped; want some, in whole groups of two", d)
	}
	// What was kept arrives in pairs, in order.
	for i := 0; i < 20; i++ {
		_, line := h.reply(t)
		want := map[bool]string{true: `"exited"`, false: `"state"`}[i%2 == 0]
		if !strings.Contains(string(line), want) {
			t.Fatalf("notification %d: %s, want %s", i, line, want)
		}
	}
}

// A result that cannot be encoded is answered with -32603, and the
// connection survives.
func TestUnencodableResultIsAnInternalError(t *testing.T) {
	h := newHarness(t, StreamConfig{})
	h.send(t, `{"jsonrpc":"2.0","id":1,"method":"nan"}`+"\n")
	h.wantError(t, CodeInternalError, "1", "encoding the result")
	h.send(t, `{"jsonrpc":"2.0","id":2,"method":"lookup","params":{"text":"ok"}}`+"\n")
	h.wantResult(t, "2", "ok")
}

func TestLookupParamsAreServedOnTheReadingGoroutineWhenTheySaySo(t *testing.T) {
	h := newHarness(t, StreamConfig{})
	h.send(t, `{"jsonrpc":"2.0","id":1,"method":"maybe","params":{"lookup":true}}`+"\n")
	h.wantResult(t, "1", "0")
	h.send(t, `{"jsonrpc":"2.0","id":2,"method":"maybe","params":{"lookup":false}}`+"\n")
	h.wantResult(t, "2", "1")
}

func TestAfterReplyRunsOnceTheReplyIsQueued(t *testing.T) {
	h := newHarness(t, StreamConfig{})
	h.send(t, `{"jsonrpc":"2.0","id":1,"method":"after"}`+"\n")
	h.wantResult(t, "1", "true")
	select {
	case <-h.replied:
	case <-time.After(10 * time.Second):
		t.Fatal("AfterReply did not run within 10 s of the reply")
	}
}

// fillWaits sends MaxWaitingCalls long waits (ids 0, 1, ...) and waits until
// every one is in progress: the next long wait is refused as busy.
func (h *harness) fillWaits(t *testing.T) {
	t.Helper()
	var b strings.Builder
	for i := 0; i < MaxWaitingCalls; i++ {
		fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":%d,"method":"block"}`+"\n", i)
	}
	h.send(t, b.String())
	waitFor(t, "every wait to be in progress", func() bool { return h.srv.inflight.Load() == MaxWaitingCalls })
}
