package manager

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// waitUntil polls cond until it holds, failing the test with what it waited
// for once the deadline (generous: it only prevents hangs) passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(20 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("waited 20s for %s", what)
		}
	}
}

// zombiesOfGroup lists the zombies in process group pgid whose parent is
// this process (the manager: a subreaper).
func zombiesOfGroup(pgid int) []string {
	var out []string
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 3 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		pg, _ := strconv.Atoi(f[2])
		if pg == pgid && ppid == os.Getpid() && (f[0] == "Z" || f[0] == "X") {
			out = append(out, strings.TrimSpace(s))
		}
	}
	return out
}

// A member whose parent exited is the sidecar's (the subreaper's) child: once
// killed it is a zombie until reaped, and stop must not return before that.
// Repeated because the window is the reaper's wake-up after SIGCHLD.
func TestStopReturnsOnlyOnceOrphanedMembersAreReaped(t *testing.T) {
	for i := 0; i < 10; i++ {
		tag := fmt.Sprintf("orphans%d", i)
		in, err := testMgr.Create(bg(), Spec{Tag: tag, Argv: []string{"sh", "-c", "sleep 1000 & sleep 1000 & sleep 1000 & exit 0"}})
		if err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the leader "+tag+" to exit, leaving its children", func() bool {
			got, ok := testMgr.Fetch(tag)
			return ok && got.Exited
		})
		if _, err := testMgr.Stop(bg(), tag, 0, 0); err != nil {
			t.Fatal(err)
		}
		if z := zombiesOfGroup(in.Pgid); len(z) > 0 {
			t.Fatalf("stop returned with %d unreaped member(s) of group %d:\n%s", len(z), in.Pgid, strings.Join(z, "\n"))
		}
	}
}

// A stop sent while the tag's create is still spawning waits for that create
// (a host interrupting it) and stops the tool it started, instead of
// answering "no such tag". The spawn is held by keeping the spawner busy.
func TestStopDuringACreatesSpawnWaitsForItAndStopsTheTool(t *testing.T) {
	const tag = "stop-while-spawning"
	hold, held := make(chan struct{}), make(chan struct{})
	go testMgr.spawner.do(func() { close(held); <-hold })
	<-held
	created := make(chan error, 1)
	go func() {
		_, err := testMgr.Create(bg(), Spec{Tag: tag, Argv: []string{"sleep", "1000"}})
		created <- err
	}()
	waitUntil(t, "the create to reserve its tag", func() bool {
		testMgr.mu.Lock()
		defer testMgr.mu.Unlock()
		_, reserved := testMgr.tools[tag]
		return reserved
	})
	type result struct {
		in  Info
		err error
	}
	stopped := make(chan result, 1)
	go func() {
		in, err := testMgr.Stop(bg(), tag, 0, 0)
		stopped <- result{in, err}
	}()
	select {
	case r := <-stopped:
		t.Fatalf("stop returned (%v) while the create was still spawning", r.err)
	case <-time.After(50 * time.Millisecond):
	}
	close(hold)
	if err := <-created; err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-stopped:
		if r.err != nil || r.in.Pid == 0 {
			t.Fatalf("stop: %+v, %v; want the started tool, stopped", r.in, r.err)
		}
		if !gone(r.in.Pid) {
			t.Errorf("pid %d still there after the stop", r.in.Pid)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the stop did not return within 20s of the create")
	}
}

// Once an exited tool's main process is reaped, its process-group id is free
// as soon as the rest of the group is gone, and an unrelated process may lead
// a group with that id. Stopping the tool (its tag is kept until then) must
// not take that stranger for what is left of the tool's tree.
func TestStopOfAnExitedToolSparesAStrangerThatLeadsAGroupWithItsOldId(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("choosing a pid (ns_last_pid) needs root")
	}
	const tag = "stop-recycled-group"
	in, err := testMgr.Create(bg(), Spec{Tag: tag, Argv: []string{"sh", "-c", "exit 0"}})
	if err != nil {
		t.Fatal(err)
	}
	tl, err := testMgr.lookup(tag)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the tool's main process to be reaped", func() bool {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		return tl.run.reaped
	})
	stranger := startWithPid(t, in.Pid)
	defer stranger.Kill()
	if _, err := testMgr.Stop(bg(), tag, 0, 0); err != nil {
		t.Fatal(err)
	}
	if e, ok := host.process(in.Pid); !ok || e.zombie || e.pgid != in.Pid {
		t.Errorf("the stranger leading group %d was killed by the stop of the exited tool (alive %v)", in.Pid, ok && !e.zombie)
	}
}
