package manager

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A stop that began while an ended run's clean-up was on its way clears the
// tree itself: the clean-up must not signal it too (a second SIGTERM can
// re-enter a tool's handler). The stop is held at the point where it waits
// for a restart's spawn (runMu), so the clean-up runs while it has begun.
func TestRunCleanUpLeavesTheTreeToAStopThatBegan(t *testing.T) {
	dir := t.TempDir()
	terms, ready := filepath.Join(dir, "terms"), filepath.Join(dir, "ready")
	script := fmt.Sprintf(`(trap 'echo term >> %s' TERM; : > %s; while :; do sleep 0.01; done) & exit 3`, terms, ready)
	const tag = "cleanup-vs-stop"
	if _, err := testMgr.Create(bg(), Spec{Tag: tag, Argv: []string{"sh", "-c", script}, StopTimeout: ptr(100 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	tl, err := testMgr.lookup(tag)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the main process to exit and its child to trap SIGTERM", func() bool {
		_, err := os.Stat(ready)
		return tl.info().Exited && err == nil
	})
	r := tl.current()

	tl.runMu.Lock()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		testMgr.Stop(bg(), tag, 0, UseDefault)
	}()
	waitUntil(t, "the stop to begin", func() bool {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		return tl.stopDone != nil
	})
	testMgr.clearThenFollow(tl, r, &nextStep{delay: time.Hour, at: time.Now()})
	got, _ := os.ReadFile(terms)
	tl.runMu.Unlock()
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatal("the stop did not return within 20s")
	}
	if len(got) > 0 {
		t.Errorf("the clean-up signalled a tree a stop had taken over: the member trapped %q", got)
	}
}

// nsLastPid makes the next fork in this pid namespace get a chosen pid
// (write pid-1), as checkpoint/restore tools do.
const nsLastPid = "/proc/sys/kernel/ns_last_pid"

// startWithPid starts `sleep 1000` as the leader of a process group of its
// own with the given pid, or skips the test when the OS does not let it.
func startWithPid(t *testing.T, pid int) *os.Process {
	t.Helper()
	for try := 0; try < 200; try++ {
		if err := os.WriteFile(nsLastPid, []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Skipf("cannot choose the next pid: %v", err)
		}
		cmd := exec.Command("sleep", "1000")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if cmd.Process.Pid == pid {
			return cmd.Process
		}
		cmd.Process.Kill() // another fork on the machine came first
	}
	t.Skipf("pid %d not obtained in 200 tries", pid)
	return nil
}

// When a restart cannot even start, the ended run was cleared already (its
// restart is scheduled only once that is done): the failure must not clear it
// again by the run's process-group id, which may name a stranger's group by
// now (pid reuse). The stranger here leads a group with exactly that id.
func TestAFailedRestartSignalsNoRecycledGroupOfTheEndedRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("choosing a pid (ns_last_pid) needs root")
	}
	exe := filepath.Join(t.TempDir(), "once")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\nrm -f \"$0\"\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	const tag = "restart-fails"
	backoff := 2 * time.Second // the restart comes 1-2 s after the exit
	_, err := testMgr.Create(bg(), Spec{Tag: tag, Argv: []string{exe}, Restart: RestartPolicy{
		When: RestartAlways, MaxRestarts: 1, InitialBackoff: &backoff, MaxBackoff: &backoff}})
	if err != nil {
		t.Fatal(err)
	}
	tl, err := testMgr.lookup(tag)
	if err != nil {
		t.Fatal(err)
	}
	defer testMgr.Stop(bg(), tag, 0, 0)
	waitUntil(t, "the ended run to be cleared and its restart scheduled", func() bool {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		return tl.timer != nil
	})
	old := tl.current().pid
	stranger := startWithPid(t, old)
	defer stranger.Kill()
	if tl.info().Restarts != 0 {
		t.Skip("the restart came before the stranger was in place")
	}
	select {
	case <-tl.settled: // fatal: the restart failed and used up the restarts
	case <-time.After(20 * time.Second):
		t.Fatal("the tool did not become fatal within 20s")
	}
	if in := tl.info(); in.State != StateFatal || in.Restarts != 1 {
		t.Fatalf("state %s after %d restarts, want fatal after 1 (a failed restart)", in.State, in.Restarts)
	}
	if e, ok := host.process(old); !ok || e.zombie || e.pgid != old {
		t.Errorf("the stranger leading group %d was signalled by the failed restart's clean-up (alive %v)", old, ok && !e.zombie)
	}
}

// A stop that begins while a restart's clean-up of the ended run is in its
// grace takes that clean-up over: a member the clean-up gave the stop signal
// does not get it a second time (a second SIGTERM can re-enter a tool's
// handler), and the clean-up is over when Stop returns.
func TestStopDuringARestartsCleanUpDoesNotSignalMembersTwice(t *testing.T) {
	dir := t.TempDir()
	script := strings.ReplaceAll(`(trap 'echo TERM >> D/log' TERM; touch D/ready; while :; do sleep 0.05; done) &
while [ ! -e D/ready ]; do sleep 0.01; done
exit 3`, "D/", dir+"/")
	const tag = "stop-during-clean-up"
	_, err := testMgr.Create(bg(), Spec{Tag: tag, Argv: []string{"sh", "-c", script},
		StopTimeout: ptr(2 * time.Second),
		Restart:     RestartPolicy{When: RestartOnFailure, MaxRestarts: 5, InitialBackoff: ptr(time.Hour), MaxBackoff: ptr(time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	tl, err := testMgr.lookup(tag)
	if err != nil {
		t.Fatal(err)
	}
	terms := func() int {
		b, _ := os.ReadFile(filepath.Join(dir, "log"))
		return strings.Count(string(b), "TERM")
	}
	waitUntil(t, "the clean-up's SIGTERM to reach the trapping member", func() bool { return terms() > 0 })
	if _, err := testMgr.Stop(bg(), tag, 0, UseDefault); err != nil {
		t.Fatal(err)
	}
	tl.mu.Lock()
	inFlight := tl.clearing != nil
	tl.mu.Unlock()
	if inFlight {
		t.Error("the restart's clean-up is still under way after Stop returned")
	}
	if n := terms(); n != 1 {
		t.Errorf("the trapping member got SIGTERM %d times, want once (clean-up and stop both signalled it)", n)
	}
}
