package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	client "procmgr/clients/go"
)

// The wire: raw JSON-RPC bytes in, every frame out checked.

func TestSeedCrashThenRestartSequenceOverRawJSONRPC(t *testing.T) {
	t.Parallel()
	r := startRaw(t, false)
	id := 0
	call := func(method string, params, out any) {
		t.Helper()
		id++
		r.mustResult(id, method, params, out)
	}
	var info client.ProcessInfo
	// procmgr.create("terrific", [...]) — a tool that crashes shortly after.
	call("create", map[string]any{"tag": "terrific", "argv": sh("/bin/sleep 0.2; kill -SEGV $$")}, &info)
	crashedPid := info.Pid
	var b bool
	call("running", map[string]any{"tag": "terrific"}, &b)
	if !b {
		t.Fatal("running just after create = false")
	}
	call("wait", map[string]any{"tag": "terrific", "timeout": 20}, &info)
	if info.State != "exited" || info.Signal == nil || *info.Signal != "SIGSEGV" {
		t.Fatalf("the tool did not crash as planned: %+v", info)
	}
	// procrun = procmgr.running("terrific")  # True
	call("running", map[string]any{"tag": "terrific"}, &b)
	if !b {
		t.Error("running after the crash = false, want true")
	}
	// myproc = procmgr.fetch("terrific"); myproc.is_alive() → False
	var f *client.ProcessInfo
	call("fetch", map[string]any{"tag": "terrific"}, &f)
	if f == nil || f.State != "exited" || f.Alive || f.Signal == nil || *f.Signal != "SIGSEGV" || f.ExitCode != nil {
		t.Errorf("fetch after the crash = %+v", f)
	}
	call("is_alive", map[string]any{"tag": "terrific"}, &b)
	if b {
		t.Error("is_alive after the crash = true")
	}
	// myproc.stop()  # tell procmgr it stopped
	call("stop", map[string]any{"tag": "terrific"}, &info)
	call("running", map[string]any{"tag": "terrific"}, &b)
	if b {
		t.Error("running after stop = true")
	}
	var raw json.RawMessage
	call("fetch", map[string]any{"tag": "terrific"}, &raw)
	if string(raw) != "null" {
		t.Errorf("fetch after stop = %s, want null", raw)
	}
	// procmgr.create("terrific", ...)  # restart
	call("create", map[string]any{"tag": "terrific", "argv": []string{"/bin/sleep", "1000"}}, &info)
	if info.Pid == crashedPid || mustIdentify(t, info.Pid).gone() {
		t.Errorf("restart gave %+v", info)
	}
	call("running", map[string]any{"tag": "terrific"}, &b)
	call("is_alive", map[string]any{"tag": "terrific"}, &b)
	if !b {
		t.Error("restarted tool not alive")
	}
	// Fence: notifications go out in the order of their events, so once the
	// exit of a tool started now is announced, a duplicate of the crash's
	// would have arrived before it.
	call("create", map[string]any{"tag": "fence", "argv": sh("exit 0")}, nil)
	r.take(func(m rawMsg) bool {
		var p client.ExitedParams
		return m.Method == "exited" && json.Unmarshal(m.Params, &p) == nil && p.Tag == "fence"
	})
	exits := 0
	for _, m := range r.all {
		if m.Method == "exited" {
			var p client.ExitedParams
			json.Unmarshal(m.Params, &p)
			if p.Tag == "terrific" && p.Pid == crashedPid {
				exits++
			}
			if len(m.ID) > 0 {
				t.Errorf("notification carries an id: %s", m)
			}
		}
	}
	if exits != 1 {
		t.Errorf("%d exited notifications for the crash, want 1", exits)
	}
}

func TestRepliesCarryTheRequestID(t *testing.T) {
	t.Parallel()
	r := startRaw(t, false)
	ids := []string{`0`, `"abc"`, `123456789012`, `""`, `"42"`, `9007199254740993`}
	var batch strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&batch, `{"jsonrpc":"2.0","id":%s,"method":"hello","params":{}}`+"\n", id)
	}
	r.sendWait([]byte(batch.String()))
	got := map[string]int{}
	for range ids {
		m := r.next()
		if m.Error != nil {
			t.Errorf("error reply %s", m)
		}
		got[string(m.ID)]++
	}
	for _, id := range ids {
		if got[id] != 1 {
			t.Errorf("id %s: %d replies (all: %v)", id, got[id], got)
		}
	}
}

// malformedCase is one bad input, and what may come back for it.
type malformedCase struct {
	name  string
	input string // written as is
	codes []int  // acceptable error codes; nil: no reply at all
	id    string // the reply's id, as JSON text
	maybe bool   // a reply is allowed but not required
	ok    bool   // the reply (with id) must be a result, not an error
}

func malformedTable() []malformedCase {
	hello := func(id, extra string) string {
		return `{"jsonrpc":"2.0","id":` + id + `,"method":"hello"` + extra + `}`
	}
	return []malformedCase{
		{"garbage line", "this is not json\n", []int{-32700}, "null", false, false},
		{"truncated object", `{"jsonrpc":"2.0","id":1,"method":"hel` + "\n", []int{-32700}, "null", false, false},
		{"unbalanced", `{"jsonrpc":"2.0","id":1}}` + "\n", []int{-32700}, "null", false, false},
		{"json array batch", "[" + hello("11", `,"params":{}`) + "]\n", []int{-32600}, "null", false, false},
		{"empty batch", "[]\n", []int{-32600}, "null", false, false},
		{"scalar", "42\n", []int{-32600, -32700}, "null", false, false},
		{"null", "null\n", []int{-32600, -32700}, "null", false, false},
		{"string", `"hello"` + "\n", []int{-32600, -32700}, "null", false, false},
		{"missing jsonrpc", `{"id":12,"method":"hello","params":{}}` + "\n", []int{-32600}, "12", false, false},
		{"jsonrpc 1.0", `{"jsonrpc":"1.0","id":13,"method":"hello","params":{}}` + "\n", []int{-32600}, "13", false, false},
		{"jsonrpc number", `{"jsonrpc":2.0,"id":14,"method":"hello","params":{}}` + "\n", []int{-32600}, "14", false, false},
		{"params array", hello("15", `,"params":[]`) + "\n", []int{-32602}, "15", false, false},
		{"params string", hello("16", `,"params":"x"`) + "\n", []int{-32602}, "16", false, false},
		{"params number", hello("17", `,"params":3`) + "\n", []int{-32602}, "17", false, false},
		{"params true", hello("18", `,"params":true`) + "\n", []int{-32602}, "18", false, false},
		{"method number", `{"jsonrpc":"2.0","id":19,"method":5,"params":{}}` + "\n", []int{-32600}, "19", false, false},
		{"method missing", `{"jsonrpc":"2.0","id":20,"params":{}}` + "\n", []int{-32600}, "20", false, false},
		{"method empty", `{"jsonrpc":"2.0","id":21,"method":"","params":{}}` + "\n", []int{-32600, -32601}, "21", false, false},
		{"id object", `{"jsonrpc":"2.0","id":{"a":1},"method":"hello","params":{}}` + "\n", []int{-32600}, "null", false, false},
		{"id array", `{"jsonrpc":"2.0","id":[1],"method":"hello","params":{}}` + "\n", []int{-32600}, "null", false, false},
		{"wrong param types", `{"jsonrpc":"2.0","id":22,"method":"create","params":{"tag":1,"argv":"x"}}` + "\n", []int{-32602}, "22", false, false},
		{"unknown param field", `{"jsonrpc":"2.0","id":23,"method":"running","params":{"tag":"a","zork":1}}` + "\n", []int{-32602}, "23", false, false},
		{"unknown method", `{"jsonrpc":"2.0","id":24,"method":"zork","params":{}}` + "\n", []int{-32601}, "24", false, false},
		{"notification of unknown method", `{"jsonrpc":"2.0","method":"zork","params":{}}` + "\n", nil, "", false, false},
		{"notification of hello", `{"jsonrpc":"2.0","method":"hello","params":{}}` + "\n", nil, "", false, false},
		{"blank line", "\n", nil, "", true, false},
		{"whitespace line", "  \t \n", nil, "", true, false},
		{"invalid utf-8", "{\"jsonrpc\":\"2.0\",\"id\":25,\"method\":\"\xff\xfe\"}\n", []int{-32700, -32600, -32601}, "25|null", true, false},
		{"NUL bytes", "\x00\x00\x00\n", []int{-32700}, "null", false, false},
		{"CRLF line end", hello("26", `,"params":{}`) + "\r\n", nil, "26", false, true},
		{"params null", hello("27", `,"params":null`) + "\n", nil, "27", false, true},
		{"params absent", hello("28", "") + "\n", nil, "28", false, true},
		// Documented in docs/protocol.md (the issue is silent on these):
		{"unknown top-level member", hello("29", `,"params":{},"zork":1`) + "\n", []int{-32600}, "29", false, false},
		{"id negative", hello("-3", `,"params":{}`) + "\n", []int{-32600}, "null", false, false},
		{"id fractional", hello("1.5", `,"params":{}`) + "\n", []int{-32600}, "null", false, false},
		{"id null", hello("null", `,"params":{}`) + "\n", []int{-32600}, "null", false, false},
	}
}

func TestMalformedInputIsAnsweredAndConnectionSurvives(t *testing.T) {
	t.Parallel()
	r := startRaw(t, false)
	var keeper client.ProcessInfo
	r.mustResult(1, "create", map[string]any{"tag": "keeper", "argv": []string{"/bin/sleep", "1000"}}, &keeper)
	next := 1000
	// Calls are served concurrently, so a reply to a bad request may come
	// after the reply to the hello that follows it: replies are matched to
	// cases by id (or id null), and a reply still due is waited for.
	for _, c := range malformedTable() {
		t.Run(c.name, func(t *testing.T) {
			r.t = t
			r.sendWait([]byte(c.input))
			next++
			// A successful call right after proves the connection survived.
			if reply := r.call(next, "hello", map[string]any{}); reply.Error != nil {
				t.Errorf("hello after %q: %s", c.input, reply)
			}
			var got []rawMsg
			if c.ok || (c.codes != nil && !c.maybe) {
				got = append(got, r.take(c.matches))
			} else {
				for _, m := range r.untaken() {
					if c.matches(m) {
						got = append(got, r.take(c.matches))
					}
				}
			}
			checkMalformedReplies(t, c, got)
		})
	}
	r.t = t
	var alive bool
	r.mustResult(2, "is_alive", map[string]any{"tag": "keeper"}, &alive)
	if !alive || mustIdentifyOrZero(keeper.Pid).gone() {
		t.Error("the tool started before the bad input is gone")
	}
	for _, m := range r.untaken() {
		t.Errorf("reply that matches no input: %s", m)
	}
}

// matches tells whether m may be the reply to this case's input.
func (c malformedCase) matches(m rawMsg) bool {
	if m.Method != "" {
		return false // a notification
	}
	ids := []string{"null"}
	if c.id != "" {
		ids = strings.Split(c.id, "|")
	}
	for _, id := range ids {
		if string(m.ID) == id {
			return true
		}
	}
	return false
}

func checkMalformedReplies(t *testing.T, c malformedCase, got []rawMsg) {
	t.Helper()
	var errs []rawMsg
	for _, m := range got {
		if m.Method != "" {
			continue // notifications
		}
		errs = append(errs, m)
	}
	if c.ok {
		if len(errs) != 1 || errs[0].Error != nil || errs[0].Result == nil || string(errs[0].ID) != c.id {
			t.Errorf("%q: want one result with id %s, got %v", c.input, c.id, errs)
		}
		return
	}
	if c.codes == nil {
		if len(errs) > 0 && !c.maybe {
			t.Errorf("%q: want no reply, got %v", c.input, errs)
		}
		return
	}
	if len(errs) == 0 {
		if !c.maybe {
			t.Errorf("%q: no reply, want error %v", c.input, c.codes)
		}
		return
	}
	if len(errs) > 1 {
		t.Errorf("%q: %d replies, want 1: %v", c.input, len(errs), errs)
	}
	m := errs[0]
	if m.Error == nil || m.Result != nil {
		t.Errorf("%q: want an error reply, got %s", c.input, m)
		return
	}
	ok := false
	for _, code := range c.codes {
		ok = ok || m.Error.Code == code
	}
	if !ok {
		t.Errorf("%q: error %d %q, want one of %v", c.input, m.Error.Code, m.Error.Message, c.codes)
	}
	if c.id != "" && !c.matches(m) {
		t.Errorf("%q: reply id %s, want %s (reply %s)", c.input, m.ID, c.id, m)
	}
	if m.Error.Message == "" {
		t.Errorf("%q: empty error message", c.input)
	}
}

// bigRequest is a well-formed request of at least n bytes.
func bigRequest(id string, n int) string {
	return `{"jsonrpc":"2.0","id":` + id + `,"method":"hello","params":{"pad":"` + strings.Repeat("x", n) + `"}}`
}

func TestOverlongMessageIsSkippedAndConnectionSurvives(t *testing.T) {
	t.Parallel()
	for _, header := range []bool{false, true} {
		t.Run(map[bool]string{false: "line", true: "header"}[header], func(t *testing.T) {
			t.Parallel()
			r := startRaw(t, header, "--max-message", "4096")
			// Just under the limit works.
			var info client.ProcessInfo
			r.mustResult(1, "create", map[string]any{"tag": "big", "argv": []string{"/bin/sh", "-c", "exit 0", strings.Repeat("a", 3000)}}, &info)
			// 1 MiB, followed in the same write by a good request.
			r.sendWait(append(r.frame(bigRequest("99", 1<<20)), r.frame(request(100, "hello", nil))...))
			if reply := r.until("100"); reply.Error != nil {
				t.Errorf("request after the overlong one: %s", reply)
			}
			c := malformedCase{name: "1 MiB", input: "<1 MiB request id 99>", codes: []int{-32600}, id: "null|99"}
			checkMalformedReplies(t, c, []rawMsg{r.take(c.matches)})
			r.mustResult(101, "list", nil, nil)
			for _, m := range r.all {
				if string(m.ID) == "99" && m.Result != nil {
					t.Errorf("the overlong request was served: %s", m)
				}
			}
		})
	}
}

// vmHWM is a process's peak resident set size in kB.
func vmHWM(t *testing.T, pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

func TestOverlongLineIsNotBufferedWhole(t *testing.T) {
	t.Parallel()
	r := startRaw(t, false, "--max-message", "4096")
	r.mustResult(1, "hello", nil, nil)
	before := vmHWM(t, r.cmd.Process.Pid)
	const size = 64 << 20
	r.sendWait([]byte(bigRequest("2", size) + "\n"))
	r.mustResult(3, "hello", nil, nil)
	after := vmHWM(t, r.cmd.Process.Pid)
	t.Logf("sidecar peak RSS %d kB before, %d kB after a %d MiB line", before, after, size>>20)
	if after-before > size/1024/2 {
		t.Errorf("peak RSS grew by %d kB reading a %d MiB line over --max-message: it was buffered", after-before, size>>20)
	}
}

func TestHeaderFramingSpeaksLSPContentLength(t *testing.T) {
	t.Parallel()
	r := startRaw(t, true)
	// The reader checks every reply's framing (Content-Length, CRLF).
	r.mustResult(1, "hello", nil, nil)
	body := func(id int) string { return request(id, "hello", map[string]any{}) }
	for i, hdr := range []string{"content-length", "CONTENT-LENGTH", "Content-length"} {
		id := 10 + i
		r.sendWait([]byte(fmt.Sprintf("%s: %d\r\n\r\n%s", hdr, len(body(id)), body(id))))
		if m := r.until(strconv.Itoa(id)); m.Error != nil {
			t.Errorf("%s header: %s", hdr, m)
		}
	}
	// Other headers are ignored.
	r.sendWait([]byte(fmt.Sprintf("Content-Type: application/vscode-jsonrpc; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s", len(body(20)), body(20))))
	if m := r.until("20"); m.Error != nil {
		t.Errorf("with Content-Type: %s", m)
	}
	// Two frames in one write, then one split across writes.
	r.sendWait(append(r.frame(body(21)), r.frame(body(22))...))
	r.until("21")
	r.until("22")
	f := r.frame(body(23))
	r.sendWait(f[:7])
	time.Sleep(50 * time.Millisecond)
	r.sendWait(f[7:])
	r.until("23")
	// A body that is not JSON is answered with -32700 and the stream goes on.
	bad := malformedCase{input: "bad body", codes: []int{-32700}, id: "null"}
	r.sendWait(r.frame("this is not json"))
	if m := r.call(24, "hello", nil); m.Error != nil {
		t.Errorf("hello after a bad body: %s", m)
	}
	checkMalformedReplies(t, bad, []rawMsg{r.take(bad.matches)})
	// A header block without a valid Content-Length is -32700, and the
	// stream goes on with the next frame.
	bad.input = "no Content-Length"
	r.sendWait([]byte("X-Foo: bar\r\n\r\n"))
	if m := r.call(27, "hello", nil); m.Error != nil {
		t.Errorf("hello after a header block without Content-Length: %s", m)
	}
	checkMalformedReplies(t, bad, []rawMsg{r.take(bad.matches)})
	// A body whose length counts trailing whitespace is consumed whole.
	b := body(25) + "\r\n"
	r.sendWait([]byte(fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(b), b)))
	if m := r.call(26, "hello", nil); m.Error != nil {
		t.Errorf("hello after a body with trailing CRLF: %s", m)
	}
	if m := r.until("25"); m.Error != nil {
		t.Errorf("body with trailing CRLF: %s", m)
	}
	for _, m := range r.untaken() {
		t.Errorf("unexpected reply: %s", m)
	}
}

func TestPipelinedRequestsAreAllAnsweredByID(t *testing.T) {
	t.Parallel()
	r := startRaw(t, false)
	const n = 300
	var b strings.Builder
	for i := 0; i < n; i++ {
		method := []string{"hello", "list", "running", "fetch"}[i%4]
		var params any = map[string]any{}
		if method == "running" || method == "fetch" {
			params = map[string]any{"tag": "t" + strconv.Itoa(i)}
		}
		b.WriteString(request(10000+i, method, params) + "\n")
	}
	r.sendWait([]byte(b.String()))
	for i := 0; i < n; i++ {
		if m := r.until(strconv.Itoa(10000 + i)); m.Error != nil {
			t.Errorf("pipelined request %d: %s", i, m)
		}
	}
}

func TestRequestWrittenByteByByteIsAssembled(t *testing.T) {
	t.Parallel()
	for _, header := range []bool{false, true} {
		r := startRaw(t, header)
		f := r.frame(request(7, "hello", map[string]any{}))
		for i := range f {
			r.sendWait(f[i : i+1])
			if i%10 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		if m := r.until("7"); m.Error != nil {
			t.Errorf("header=%v: %s", header, m)
		}
	}
}
