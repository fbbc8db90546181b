package manager

import (
	"fmt"
	"testing"
	"time"
)

var farFuture = time.Now().Add(time.Hour)

// A snapshot by hand: the sidecar (pid 100), tool "a" leading group 200,
// and what its descendants did. Ancestry is computed from these entries only.
func ancestryTable(entries []procEntry, tags map[procKey]string) *procTable {
	pt := newProcTable("s", func() map[int]groupOwner { return map[int]groupOwner{200: {tag: "a"}} })
	pt.self = 100
	pt.entries = entries
	pt.tags = tags
	return pt
}

func TestAncestryAttributesUnmarkedDescendantsThatLeftTheGroupAndRemembersThem(t *testing.T) {
	entries := []procEntry{
		{pid: 100, ppid: 1, pgid: 100, start: 1},   // the sidecar
		{pid: 200, ppid: 100, pgid: 200, start: 2}, // tool a's main process
		{pid: 301, ppid: 200, pgid: 301, start: 3}, // env -i setsid: its own group, no mark
		{pid: 302, ppid: 301, pgid: 301, start: 4}, // and its child
		{pid: 400, ppid: 100, pgid: 400, start: 5}, // an orphan adopted before anyone looked
		{pid: 401, ppid: 1, pgid: 401, start: 6},   // a stranger
		{pid: 500, ppid: 100, pgid: 500, start: 7}, // marked "b", out of any tool group
		{pid: 501, ppid: 500, pgid: 500, start: 8}, // its unmarked child
		{pid: 600, ppid: 601, pgid: 600, start: 9}, // a cycle, as a racy snapshot could show
		{pid: 601, ppid: 600, pgid: 600, start: 10},
	}
	pt := ancestryTable(entries, map[procKey]string{{500, 7}: "b"})
	pt.owner = pt.attributeByAncestry(pt.entries, leaders(pt.entries))
	want := map[int]string{200: "a", 301: "a", 302: "a", 500: "b", 501: "b"}
	for _, e := range entries {
		if got := pt.owner[procKey{e.pid, e.start}]; got != want[e.pid] {
			t.Errorf("pid %d: owner %q, want %q", e.pid, got, want[e.pid])
		}
	}

	// The tool's main process exits: 301 is re-parented to the sidecar and
	// 302 keeps its parent. Both stay a's, by the owner recorded before.
	pt.entries = []procEntry{
		{pid: 100, ppid: 1, pgid: 100, start: 1},
		{pid: 301, ppid: 100, pgid: 301, start: 3},
		{pid: 302, ppid: 301, pgid: 301, start: 4},
		{pid: 303, ppid: 302, pgid: 301, start: 11}, // forked since: its parent is a's
		{pid: 400, ppid: 100, pgid: 400, start: 5},
	}
	pt.owner = pt.attributeByAncestry(pt.entries, leaders(pt.entries))
	for pid, w := range map[int]string{301: "a", 302: "a", 303: "a", 400: ""} {
		var k procKey
		for _, e := range pt.entries {
			if e.pid == pid {
				k = procKey{e.pid, e.start}
			}
		}
		if got := pt.owner[k]; got != w {
			t.Errorf("after the tool's exit, pid %d: owner %q, want %q", pid, got, w)
		}
	}
	// A recycled pid (another start time) is not the recorded process.
	pt.entries = []procEntry{{pid: 100, ppid: 1, pgid: 100, start: 1}, {pid: 301, ppid: 100, pgid: 301, start: 99}}
	pt.owner = pt.attributeByAncestry(pt.entries, leaders(pt.entries))
	if got := pt.owner[procKey{301, 99}]; got != "" {
		t.Errorf("recycled pid 301 inherited the owner %q of the process it replaced", got)
	}
	if len(pt.recorded) != 0 {
		t.Errorf("records of gone processes kept: %v", pt.recorded)
	}
}

func TestLeftoversAreEveryDescendantOfTheSidecarButTheSpared(t *testing.T) {
	pt := ancestryTable([]procEntry{
		{pid: 100, ppid: 1, pgid: 100, start: 1},
		{pid: 150, ppid: 100, pgid: 150, start: 2}, // the watchdog
		{pid: 151, ppid: 150, pgid: 150, start: 3}, // (it has no children; were it to, spared too)
		{pid: 400, ppid: 100, pgid: 400, start: 4}, // an unattributed orphan
		{pid: 401, ppid: 400, pgid: 400, start: 5}, // its child
		{pid: 402, ppid: 400, pgid: 400, start: 6, zombie: true},
		{pid: 700, ppid: 1, pgid: 700, start: 7}, // a stranger
		{pid: 800, ppid: 1, pgid: 800, start: 8}, // marked by this session, elsewhere
	}, map[procKey]string{{800, 8}: "gone-tool"})
	pt.taken = farFuture // keep the hand-made snapshot
	got := map[int]bool{}
	for _, e := range pt.leftovers(map[int]bool{150: true}) {
		got[e.pid] = true
	}
	want := map[int]bool{400: true, 401: true, 800: true}
	if len(got) != len(want) {
		t.Errorf("leftovers %v, want %v", got, want)
	}
	for pid := range want {
		if !got[pid] {
			t.Errorf("leftovers %v miss %d", got, pid)
		}
	}
}

func TestWatchdogTakesUnmarkedDescendantsOfSessionMembers(t *testing.T) {
	entries := []procEntry{
		{pid: 300, ppid: 1},   // a marked member, re-parented to init
		{pid: 301, ppid: 300}, // its env-cleared setsid child
		{pid: 302, ppid: 301}, // and grandchild
		{pid: 303, ppid: 301, zombie: true},
		{pid: 400, ppid: 1},   // a stranger
		{pid: 401, ppid: 400}, // its child
		{pid: 500, ppid: 1},   // the watchdog itself
		{pid: 501, ppid: 500},
	}
	got := descendantsOf(entries, map[int]bool{300: true, 400: false}, 500)
	if len(got) != 2 || got[0] != 301 || got[1] != 302 {
		t.Errorf("descendants %v, want [301 302]", got)
	}
}

// After a run's leader (pid 200) is reaped at start-clock 50, its group id
// counts only for processes that started by then and only while no process
// leads a group with that id: a leader is a stranger that got the pid, and
// the old group and the stranger's never coexist.
func TestRunGroupAfterTheLeadersReapCountsOnlyOldMembersOfALeaderlessGroup(t *testing.T) {
	reaped := &leaderEnd{}
	reaped.clock.Store(50)
	reaped.reaped.Store(true)
	key := memberKey{pgid: 200, end: reaped}
	cases := []struct {
		name    string
		entries []procEntry
		want    string
	}{
		{"old members, leader reaped", []procEntry{
			{pid: 201, ppid: 100, pgid: 200, start: 40},
			{pid: 202, ppid: 201, pgid: 200, start: 50}, // in the reap's tick
			{pid: 203, ppid: 201, pgid: 200, start: 51}, // forked after: mark or ancestry only
		}, "[201 202]"},
		{"a stranger leads the group id", []procEntry{
			{pid: 200, ppid: 1, pgid: 200, start: 60},
			{pid: 204, ppid: 200, pgid: 200, start: 61},
		}, "[]"},
		{"a stranger's zombie leader still names its group", []procEntry{
			{pid: 200, ppid: 1, pgid: 200, start: 50, zombie: true},
			{pid: 204, ppid: 1, pgid: 200, start: 50},
		}, "[]"},
		{"a leaderless stranger's group, started after the reap", []procEntry{
			{pid: 205, ppid: 1, pgid: 200, start: 70},
		}, "[]"},
	}
	for _, c := range cases {
		pt := newProcTable("s", nil)
		pt.self = 100
		pt.entries = c.entries
		pt.led = leaders(c.entries)
		pt.taken = farFuture // fresh: no refresh from the real /proc
		if got := fmt.Sprint(pidsOf(pt.membersOf(key))); got != c.want {
			t.Errorf("%s: members %s, want %s", c.name, got, c.want)
		}
		unreaped := memberKey{pgid: 200}
		if c.name == "old members, leader reaped" {
			if got := fmt.Sprint(pidsOf(pt.membersOf(unreaped))); got != "[201 202 203]" {
				t.Errorf("leader unreaped: members %s, want the whole group", got)
			}
		}
	}
}
