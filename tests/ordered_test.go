package tests

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// A create and a stop of its tag, sent back to back (pipelined, or a host
// interrupting the create it just sent), must not race: the stop finds the
// tool the create starts and stops it. Before the create's tag was reserved
// in input order, a few percent of such stops answered -32002 while the
// tool started afterwards and ran on until the session ended.
func TestStopSentRightAfterACreateStopsItsTool(t *testing.T) {
	t.Parallel()
	const pairs = 250
	r := startRaw(t, false, "--log-level", "error")
	var hello struct {
		Session string `json:"session"`
	}
	r.mustResult(0, "hello", nil, &hello)
	if hello.Session == "" {
		t.Fatal("hello gave no session")
	}
	knownSessions.Store(hello.Session, true)
	var b strings.Builder
	for i := range pairs {
		tag := fmt.Sprintf("pair%d", i)
		b.Write(r.frame(request(fmt.Sprintf("c%d", i), "create", map[string]any{"tag": tag, "argv": []string{"sleep", "100"}})))
		b.Write(r.frame(request(fmt.Sprintf("s%d", i), "stop", map[string]any{"tag": tag, "timeout": 1})))
	}
	r.sendWait([]byte(b.String())) // one write: the sidecar reads each stop right after its create
	var info struct {
		Pid int `json:"pid"`
	}
	pids := make([]int, 0, pairs)
	var missed []string
	for i := range pairs {
		c := r.until(fmt.Sprintf(`"c%d"`, i))
		if c.Error != nil || json.Unmarshal(c.Result, &info) != nil || info.Pid <= 1 {
			t.Fatalf("create %d: want a tool's info, got %s", i, c)
		}
		pids = append(pids, info.Pid)
		s := r.until(fmt.Sprintf(`"s%d"`, i))
		var stopped struct {
			Pid int `json:"pid"`
		}
		if s.Error != nil || json.Unmarshal(s.Result, &stopped) != nil || stopped.Pid != info.Pid {
			missed = append(missed, fmt.Sprintf("pair %d (tool %d): %s", i, info.Pid, s))
		}
	}
	if len(missed) > 0 {
		t.Errorf("%d of %d stops did not stop the tool their create started:\n%s", len(missed), pairs, strings.Join(missed, "\n"))
	}
	// Per the OS: every stop has returned, so no tool may be alive. A pid
	// alive again belongs to this session only if it is still our tool.
	for _, pid := range pids {
		if env, err := environ(pid); err == nil && env["PROCMGR_SESSION"] == hello.Session {
			if id, err := identify(pid); err == nil && !id.gone() {
				t.Errorf("tool %d is alive after its stop answered", pid)
			}
		}
	}
	if left := sessionMembers(hello.Session); len(left) > 0 {
		t.Errorf("processes of the session remain after every stop answered:\n%s", list(left))
	}
	var tools []json.RawMessage
	r.mustResult(1, "list", nil, &tools)
	if len(tools) != 0 {
		t.Errorf("list after every stop: %d tools, want none", len(tools))
	}
}
