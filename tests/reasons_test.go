package tests

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	client "procmgr/clients/go"
)

// TestEveryErrorNamesItsReason: each kind of error reply carries its stable
// error.data.reason word (docs/protocol.md, "Errors"), the word clients
// branch on instead of the message text; errors about a tag also name it.
// The three that need a scene of their own are checked where it is set up:
// shutting_down in TestCreateDuringShutdownFailsWithShuttingDown,
// server_busy in TestPendingWaitsNeverStarveStop, internal_error in
// rpc/jsonrpc's unit tests (a method that panics or returns a plain error).
func TestEveryErrorNamesItsReason(t *testing.T) {
	t.Parallel()
	r := startRaw(t, false)
	dir := t.TempDir()
	id := 0
	call := func(method string, params any) rawMsg {
		t.Helper()
		id++
		r.sendWait(r.frame(request(id, method, params)))
		return r.until(fmt.Sprint(id))
	}
	want := func(what string, m rawMsg, code int, reason, tag string) {
		t.Helper()
		if m.Error == nil || m.Error.Code != code {
			t.Errorf("%s: want error %d, got %s", what, code, m)
			return
		}
		var d map[string]any
		if err := json.Unmarshal(m.Error.Data, &d); err != nil {
			t.Errorf("%s: error.data %s is not an object: %v", what, m.Error.Data, err)
			return
		}
		if d["reason"] != reason {
			t.Errorf("%s: error.data.reason = %v, want %q (reply %s)", what, d["reason"], reason, m)
		}
		if tag != "" && d["tag"] != tag {
			t.Errorf("%s: error.data.tag = %v, want %q (reply %s)", what, d["tag"], tag, m)
		}
	}
	ok := func(what string, m rawMsg) {
		t.Helper()
		if m.Error != nil {
			t.Fatalf("%s: %s", what, m)
		}
	}
	sleeper := []string{"/bin/sleep", "1000"}

	r.sendWait([]byte("{not json\n"))
	want("unparsable line", r.next(), -32700, "parse_error", "")
	r.sendWait([]byte(`{"jsonrpc":"1.0","id":"x","method":"hello"}` + "\n"))
	want("jsonrpc 1.0", r.next(), -32600, "invalid_request", "")
	want("unknown method", call("no_such_method", nil), -32601, "method_not_found", "")
	want("unknown field", call("fetch", map[string]any{"tag": "a", "bogus": 1}), -32602, "invalid_params", "")

	ok("create", call("create", map[string]any{"tag": "cat", "argv": []string{"/bin/cat"}, "stdin": "pipe"}))
	want("a second create of a tag", call("create", map[string]any{"tag": "cat", "argv": sleeper}), -32001, "tag_in_use", "cat")
	want("read of uncaptured stdout", call("read_output", map[string]any{"tag": "cat"}), -32602, "not_captured", "cat")
	ok("write_stdin with eof", call("write_stdin", map[string]any{"tag": "cat", "data": "x", "eof": true}))
	want("write after eof", call("write_stdin", map[string]any{"tag": "cat", "data": "x"}), -32602, "stdin_closed", "cat")
	ok("create", call("create", map[string]any{"tag": "null", "argv": sleeper}))
	want("write to stdin null", call("write_stdin", map[string]any{"tag": "null", "data": "x"}), -32602, "stdin_not_piped", "null")

	want("unknown tag", call("is_alive", map[string]any{"tag": "nobody"}), -32002, "no_such_tag", "nobody")
	want("missing executable", call("create", map[string]any{"tag": "m", "argv": []string{filepath.Join(dir, "nope")}}), -32003, "exec_not_found", "m")
	want("not in PATH", call("create", map[string]any{"tag": "p", "argv": []string{"procmgr-no-such-command-xyz"}}), -32003, "exec_not_found", "p")
	want("bad cwd", call("create", map[string]any{"tag": "c", "argv": sleeper, "cwd": filepath.Join(dir, "nowhere")}), -32003, "spawn_failed", "c")
	want("not executable", call("create", map[string]any{"tag": "x", "argv": []string{dir}}), -32003, "spawn_failed", "x")

	want("not ready in time", call("create", map[string]any{"tag": "late", "argv": sleeper, "stdout": "capture",
		"ready": map[string]any{"output": "never", "timeout": 0}}), -32005, "timeout", "late")
	want("exited before ready", call("create", map[string]any{"tag": "quit", "argv": []string{"/bin/true"},
		"stdout": "capture", "ready": map[string]any{"output": "never", "timeout": 60}}), -32005, "exited", "quit")

	// A stop ends a readiness wait: the create answers "stopped".
	id++
	waiting := fmt.Sprint(id)
	r.sendWait(r.frame(request(id, "create", map[string]any{"tag": "w", "argv": sleeper, "stdout": "capture",
		"ready": map[string]any{"output": "never", "timeout": 60}})))
	deadline := time.Now().Add(callTimeout)
	for call("is_alive", map[string]any{"tag": "w"}).Error != nil { // -32002 until the create holds the tag
		if time.Now().After(deadline) {
			t.Fatalf("the waiting create of %q did not take its tag within %v", "w", callTimeout)
		}
	}
	ok("stop of a tag whose create waits", call("stop", map[string]any{"tag": "w"}))
	want("stop during the readiness wait", r.until(waiting), -32005, "stopped", "w")
}

// TestGoClientReadsTheReason: the Go client hands clients the reason word
// (RPCError.Reason), and its constants are the sidecar's words.
func TestGoClientReadsTheReason(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	_, err := sc.Stop(ctxT(t), client.StopParams{Tag: "nobody"})
	var re *client.RPCError
	if !errors.As(err, &re) || re.Code != client.CodeNoSuchTag || re.Reason() != client.ReasonNoSuchTag {
		t.Errorf("stop of an unknown tag: %v; want %d with reason %q", err, client.CodeNoSuchTag, client.ReasonNoSuchTag)
	}
	_, err = sc.Create(ctxT(t), client.CreateParams{Tag: "late", Argv: []string{"/bin/sleep", "1000"},
		Ready: map[string]any{"path": filepath.Join(t.TempDir(), "never"), "timeout": 0}})
	if !errors.As(err, &re) || re.Code != client.CodeNotReady || re.Reason() != client.ReasonNotReadyTimeout {
		t.Errorf("create never ready: %v; want %d with reason %q", err, client.CodeNotReady, client.ReasonNotReadyTimeout)
	}
}
