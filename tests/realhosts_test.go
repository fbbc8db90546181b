package tests

// Issue 11, sidecar side: what real hosts (Jupyter, dbus-daemon, http.server,
// shells that block signals) found. Each test asserts on what the OS shows.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	client "procmgr/clients/go"
)

// createRaw calls create with params as given (fields the Go client lacks).
func (sc *sidecar) createRaw(ctx context.Context, params map[string]any) (client.ProcessInfo, error) {
	var info client.ProcessInfo
	err := sc.Call(ctx, "create", params, &info)
	return info, err
}

// notReadyData is -32005's error.data.
type notReadyData struct {
	Tag        string  `json:"tag"`
	Reason     string  `json:"reason"` // "timeout", "exited" or "stopped"
	Stopped    bool    `json:"stopped"`
	OutputTail *string `json:"output_tail"`
	ExitStatus *struct {
		ExitCode *int    `json:"exit_code"`
		Signal   *string `json:"signal"`
	} `json:"exit_status"`
}

func wantNotReady(t *testing.T, what string, err error) (*client.RPCError, notReadyData) {
	t.Helper()
	re := wantCode(t, what, err, client.CodeNotReady)
	var d notReadyData
	if re == nil {
		t.FailNow()
	}
	if err := json.Unmarshal(re.Data, &d); err != nil {
		t.Fatalf("%s: error.data %s: %v", what, re.Data, err)
	}
	return re, d
}

// assertNotReadyToolGone checks, right after a -32005 for tag, what the OS
// says of the tool that create started (the "started" event names it): a
// -32005 is answered once the tool was stopped. Nothing may be left of it:
// no process in its group (its children included; an unreaped zombie
// counts), nothing at its pid that is the sidecar's child (the tool
// unreaped; another process may have its pid by now), and no process that
// carries the session's and tag's marks (a child that left the group).
func assertNotReadyToolGone(t *testing.T, sc *sidecar, tag string) {
	t.Helper()
	h := helloOf(t, sc)
	started := awaitState(t, sc, tag, "started")
	if started.Pid <= 1 || started.Pgid <= 1 {
		t.Fatalf("started event of %q names pid %d group %d", tag, started.Pid, started.Pgid)
	}
	if left := groupMembers(started.Pgid); len(left) > 0 {
		t.Errorf("after -32005 for %q: its group %d still has:\n%s", tag, started.Pgid, list(left))
	}
	if err := syscall.Kill(started.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		if st, err := readStat(started.Pid); err == nil && st.Ppid == sc.Pid() && started.Pid != h.WatchdogPid {
			t.Errorf("after -32005 for %q: its pid is still the sidecar's child: %s", tag, describe(started.Pid))
		}
	}
	for _, id := range sessionMembers(h.Session) {
		if env, err := environ(id.Pid); err == nil && env["PROCMGR_TAG"] == tag {
			t.Errorf("after -32005 for %q: a process of it remains: %s", tag, describe(id.Pid))
		}
	}
}

// awaitState reads notifications until a `state` one of tag in state kind
// arrives, and returns its info.
func awaitState(t *testing.T, sc *sidecar, tag, kind string) client.ProcessInfo {
	t.Helper()
	deadline := time.After(callTimeout)
	for {
		select {
		case n := <-sc.Notifications():
			if n.Method != "state" {
				continue
			}
			var p struct {
				Tag   string             `json:"tag"`
				State string             `json:"state"`
				Info  client.ProcessInfo `json:"info"`
			}
			if err := json.Unmarshal(n.Params, &p); err != nil {
				t.Fatalf("state params %s: %v", n.Params, err)
			}
			if p.Tag == tag && p.State == kind {
				return p.Info
			}
		case <-deadline:
			t.Fatalf("no %q state event for %q within %v", kind, tag, callTimeout)
		}
	}
}

// readPids reads one pid per line from a file the tools append to.
func readPids(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("%s: %q is not a pid", path, f)
		}
		pids = append(pids, pid)
	}
	return pids
}

// ---- 1. readiness owned by the tool ---------------------------------------

func TestReadyTCPHeldByAnotherProcessDoesNotCount(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	// The port is held (and answered) by this test process, not by the tool.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	_, err = sc.createRaw(ctxT(t), map[string]any{"tag": "late", "argv": []string{"/bin/sleep", "600"},
		"ready": map[string]any{"tcp": fmt.Sprintf("127.0.0.1:%d", port), "timeout": 1}})
	re, _ := wantNotReady(t, "ready.tcp on a port held by the test process", err)
	want := fmt.Sprintf("port %d is held by pid %d", port, os.Getpid())
	if !strings.Contains(re.Message, want) || !strings.Contains(re.Message, "not by this tool") {
		t.Errorf("message %q does not say %q ... not by this tool", re.Message, want)
	}
	if running, _ := sc.Running(ctxT(t), "late"); running {
		t.Errorf("tag still held after the not-ready create")
	}
	assertNotReadyToolGone(t, sc, "late")
}

func TestReadyTCPHoldsWhenAToolDescendantListens(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	// The listener is a child of the tool's shell: ownership is the tree's.
	script := fmt.Sprintf(`python3 -c 'import socket,time
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", %d)); s.listen(5); time.sleep(600)' & wait`, port)
	info, err := sc.createRaw(ctxT(t), map[string]any{"tag": "srv", "argv": sh(script),
		"ready": map[string]any{"tcp": fmt.Sprintf("127.0.0.1:%d", port), "timeout": 20}})
	if err != nil {
		t.Fatalf("create with ready.tcp on the tool's own port: %v", err)
	}
	// The OS says who listens: a process whose group is the tool's.
	held := false
	for _, id := range groupMembers(info.Pgid) {
		if fdsHaveListener(id.Pid, port) {
			held = true
		}
	}
	if !held {
		t.Errorf("create said ready, but no process of group %d listens on %d", info.Pgid, port)
	}
	sc.Stop(ctxT(t), client.StopParams{Tag: "srv"})
}

// fdsHaveListener reports whether pid holds a LISTEN socket on port.
func fdsHaveListener(pid, port int) bool {
	inodes := map[string]bool{}
	for _, path := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, _ := os.ReadFile(path)
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" {
				continue
			}
			if p, err := strconv.ParseUint(f[1][strings.LastIndexByte(f[1], ':')+1:], 16, 16); err == nil && int(p) == port {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	m, _ := fds(pid)
	for _, target := range m {
		if inodes[target] {
			return true
		}
	}
	return false
}

// ---- 2. a restart starts clean ---------------------------------------------

func TestRestartStopsWhatTheCrashedRunLeftBeforeTheNextRun(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "children")
	// Each run leaves a child holding on, then crashes.
	script := fmt.Sprintf("sleep 600 & echo $! >> %s; sleep 0.2; exit 7", pidfile)
	_, err := sc.createRaw(ctxT(t), map[string]any{"tag": "crashy", "argv": sh(script),
		"restart": map[string]any{"policy": "on-failure", "max_restarts": 3, "backoff": map[string]any{"initial": 0, "max": 0}}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		awaitState(t, sc, "crashy", "restarting")
		// When the restart is announced, every child of the runs so far is gone.
		var ids []procID
		for _, pid := range readPids(t, pidfile)[:i] {
			if id, err := identify(pid); err == nil {
				ids = append(ids, id)
			}
		}
		// Not waited for: a restart that cleaned up only later (at fatal, or
		// at stop) would pass a wait. Zombies not reaped yet are dead.
		assertDeadNow(t, fmt.Sprintf("children of crashed runs when restart %d was announced", i), ids)
	}
	info := awaitState(t, sc, "crashy", "fatal")
	if info.State != "fatal" {
		t.Errorf("fatal event info state %q", info.State)
	}
	// The fatal run's child too is gone, before any stop.
	pids := readPids(t, pidfile)
	if len(pids) != 4 {
		t.Fatalf("%d runs recorded, want 4: %v", len(pids), pids)
	}
	for _, pid := range pids {
		if id, err := identify(pid); err == nil {
			assertGoneNow(t, "a crashed run's child after the tool turned fatal", []procID{id})
		}
	}
	if running, _ := sc.Running(ctxT(t), "crashy"); !running {
		t.Errorf("a fatal tool must keep its tag until stop")
	}
}

func TestExitWithoutRestartPolicyLeavesItsChildrenUntilStop(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "child")
	info := sc.create(client.CreateParams{Tag: "casa", Argv: sh(fmt.Sprintf("sleep 600 & echo $! > %s; exit 3", pidfile))})
	if _, err := sc.WaitTool(ctxT(t), "casa", nil); err != nil {
		t.Fatal(err)
	}
	child := mustIdentify(t, readPids(t, pidfile)[0])
	alive, _ := sc.IsAlive(ctxT(t), "casa")
	running, _ := sc.Running(ctxT(t), "casa")
	if alive || !running || child.gone() {
		t.Fatalf("after the main process (%d) exited: is_alive %v running %v, child gone %v; want false, true, false",
			info.Pid, alive, running, child.gone())
	}
	sc.Stop(ctxT(t), client.StopParams{Tag: "casa"})
	assertGoneNow(t, "the child after stop", []procID{child})
}

// ---- 3. daemonizing tools ---------------------------------------------------

func TestDaemonToolFollowsTheProcessItsLauncherLeft(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "daemon")
	// A shell double fork: the subshell starts the daemon and exits, then the
	// launcher exits 0.
	script := fmt.Sprintf("(sleep 600 & echo $! > %s) ; exit 0", pidfile)
	info, err := sc.createRaw(ctxT(t), map[string]any{"tag": "dd", "argv": sh(script), "daemon": true})
	if err != nil {
		t.Fatal(err)
	}
	ev := awaitState(t, sc, "dd", "daemonized")
	daemon := mustIdentify(t, readPids(t, pidfile)[0])
	if ev.Pid != daemon.Pid || !ev.Alive {
		t.Fatalf("daemonized event pid %d alive %v; the daemon is %d (launcher %d)", ev.Pid, ev.Alive, daemon.Pid, info.Pid)
	}
	got, _ := sc.Fetch(ctxT(t), "dd")
	alive, _ := sc.IsAlive(ctxT(t), "dd")
	if got == nil || got.Pid != daemon.Pid || !alive {
		t.Fatalf("fetch %+v is_alive %v; want the daemon %d alive", got, alive, daemon.Pid)
	}
	// The daemon's real death is the tool's exit.
	if err := killPid(daemon.Pid); err != nil {
		t.Fatal(err)
	}
	w, err := sc.WaitTool(ctxT(t), "dd", client.Ptr(20.0))
	if err != nil || w.Alive || w.Pid != daemon.Pid || w.Signal == nil || *w.Signal != "SIGKILL" {
		t.Fatalf("wait after killing the daemon: %+v %v; want pid %d killed by SIGKILL", w, err, daemon.Pid)
	}
	sc.Stop(ctxT(t), client.StopParams{Tag: "dd"})
}

func killPid(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}

func TestDaemonToolFollowsThePidFile(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	dir := t.TempDir()
	// Two survivors; the pid file names the younger one, not the oldest.
	script := "sleep 600 & sleep 601 & echo $! > d.pid; exit 0"
	_, err := sc.createRaw(ctxT(t), map[string]any{"tag": "pf", "argv": sh(script), "cwd": dir,
		"daemon": true, "pid_file": "d.pid"})
	if err != nil {
		t.Fatal(err)
	}
	ev := awaitState(t, sc, "pf", "daemonized")
	want := readPids(t, filepath.Join(dir, "d.pid"))[0]
	if ev.Pid != want {
		t.Fatalf("followed pid %d, pid file says %d", ev.Pid, want)
	}
	// Both survivors as the OS shows them, the followed daemon among them
	// (with none found, the check after stop would hold for nothing).
	session := toolSessionOf(t, sc)
	var ids []procID
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ids = sessionMembers(session)
		sleeps, followed := 0, false
		for _, id := range ids {
			if st, err := readStat(id.Pid); err == nil && st.Comm == "sleep" {
				sleeps++
			}
			followed = followed || id.Pid == ev.Pid
		}
		if followed && sleeps == 2 && len(ids) == 2 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("waited 20s for the followed daemon %d and its sibling, both exec'd, as the session's only processes:\n%s", ev.Pid, list(ids))
		}
	}
	if _, err := sc.Stop(ctxT(t), client.StopParams{Tag: "pf"}); err != nil {
		t.Fatalf("stop: %v", err)
	}
	assertGoneNow(t, "both daemons after stop", ids)
}

func toolSessionOf(t *testing.T, sc *sidecar) string {
	h, err := sc.Hello(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return h.Session
}

func TestDaemonToolIsRestartedWhenItsDaemonDiesNeverTwoAtOnce(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	pidfile := filepath.Join(t.TempDir(), "daemons")
	script := fmt.Sprintf("(sleep 600 & echo $! >> %s) ; exit 0", pidfile)
	_, err := sc.createRaw(ctxT(t), map[string]any{"tag": "rd", "argv": sh(script), "daemon": true,
		"restart": map[string]any{"policy": "always", "max_restarts": 5, "backoff": map[string]any{"initial": 0, "max": 0}}})
	if err != nil {
		t.Fatal(err)
	}
	first := awaitState(t, sc, "rd", "daemonized")
	firstID := mustIdentify(t, first.Pid)
	if err := killPid(first.Pid); err != nil {
		t.Fatal(err)
	}
	second := awaitState(t, sc, "rd", "daemonized")
	if second.Pid == first.Pid || !second.Alive {
		t.Fatalf("after the daemon's death: daemonized %+v, want a new live daemon", second)
	}
	assertGoneNow(t, "the first daemon once the second runs", []procID{firstID})
	var live []int
	for _, pid := range readPids(t, pidfile) {
		if id, err := identify(pid); err == nil && !id.gone() {
			live = append(live, pid)
		}
	}
	if len(live) != 1 || live[0] != second.Pid {
		t.Errorf("live daemons %v, want only %d", live, second.Pid)
	}
	sc.Stop(ctxT(t), client.StopParams{Tag: "rd"})
}

func TestDaemonLauncherThatFailsOrLeavesNothingHasExited(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	for _, c := range []struct {
		tag, script string
		code        int
	}{{"fails", "sleep 600 & exit 3", 3}, {"nothing", "exit 0", 0}} {
		info, err := sc.createRaw(ctxT(t), map[string]any{"tag": c.tag, "argv": sh(c.script), "daemon": true})
		if err != nil {
			t.Fatal(err)
		}
		w, err := sc.WaitTool(ctxT(t), c.tag, client.Ptr(20.0))
		if err != nil || w.Alive || w.Pid != info.Pid || w.ExitCode == nil || *w.ExitCode != c.code {
			t.Errorf("%s: wait %+v %v; want the launcher %d exited %d", c.tag, w, err, info.Pid, c.code)
		}
		sc.Stop(ctxT(t), client.StopParams{Tag: c.tag})
	}
}

func TestDaemonToolWithDbusDaemonFork(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Skip("dbus-daemon is not installed (apt-get install -y dbus); the shell double-fork tests cover the logic")
	}
	sc := startSidecar(t)
	dir := t.TempDir()
	info, err := sc.createRaw(ctxT(t), map[string]any{"tag": "bus", "daemon": true,
		"argv": []string{bin, "--session", "--fork", "--nopidfile", "--address=unix:path=" + filepath.Join(dir, "bus")}})
	if err != nil {
		t.Fatal(err)
	}
	ev := awaitState(t, sc, "bus", "daemonized")
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", ev.Pid))
	if ev.Pid == info.Pid || strings.TrimSpace(string(comm)) != "dbus-daemon" {
		t.Fatalf("followed pid %d (%q), launcher %d; want the forked dbus-daemon", ev.Pid, comm, info.Pid)
	}
	daemon := mustIdentify(t, ev.Pid)
	if alive, _ := sc.IsAlive(ctxT(t), "bus"); !alive {
		t.Errorf("is_alive false while the bus serves")
	}
	st, err := sc.Stop(ctxT(t), client.StopParams{Tag: "bus"})
	if err != nil || st.Pid != daemon.Pid {
		t.Errorf("stop %+v %v", st, err)
	}
	assertGoneNow(t, "dbus-daemon after stop", []procID{daemon})
}

// ---- 4. a stop ends a create's readiness wait -------------------------------

func TestStopOfATagWhoseCreateWaitsForReadinessEndsTheWait(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	// The tool ignores SIGTERM and has a long grace: only the stop can end
	// the readiness wait early, and the answer must say so.
	type res struct {
		err error
	}
	done := make(chan res, 1)
	go func() {
		_, err := sc.createRaw(ctxT(t), map[string]any{"tag": "slow", "argv": sh("trap '' TERM; sleep 600 & wait; sleep 600"),
			"stop_timeout": 1, "ready": map[string]any{"path": "/nonexistent/never", "timeout": 600}})
		done <- res{err}
	}()
	info := awaitState(t, sc, "slow", "started")
	id := mustIdentify(t, info.Pid)
	if _, err := sc.Stop(ctxT(t), client.StopParams{Tag: "slow"}); err != nil {
		t.Fatalf("stop during the readiness wait: %v", err)
	}
	var r res
	select {
	case r = <-done:
	case <-time.After(callTimeout):
		t.Fatal("create still waiting for readiness after its tag was stopped")
	}
	re, d := wantNotReady(t, "create whose tag was stopped", r.err)
	if !d.Stopped || re.Reason() != client.ReasonNotReadyStopped || d.Reason != client.ReasonNotReadyStopped {
		t.Errorf("-32005 %q data %+v does not say it was stopped (reason %q)", re.Message, d, client.ReasonNotReadyStopped)
	}
	assertGoneNow(t, "the tool after stop", []procID{id})
	if running, _ := sc.Running(ctxT(t), "slow"); running {
		t.Errorf("tag still held")
	}
}

func TestGoClientCreateWhoseContextEndsStopsTheToolAndFreesTheTag(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() {
		_, err := sc.Create(ctx, client.CreateParams{Tag: "ctrlc", Argv: sh("trap '' TERM; sleep 600 & wait; sleep 600"),
			StopTimeout: client.Ptr(1.0), Ready: map[string]any{"path": "/nonexistent/never", "timeout": 600}})
		done <- err
	}()
	info := awaitState(t, sc, "ctrlc", "started")
	id := mustIdentify(t, info.Pid)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("create returned %v, want context.Canceled", err)
		}
	case <-time.After(callTimeout):
		t.Fatal("Create did not return after its context was cancelled")
	}
	// Create returned only once the tool was stopped and the tag freed.
	assertGoneNow(t, "the tool of a cancelled create", []procID{id})
	if running, _ := sc.Running(ctxT(t), "ctrlc"); running {
		t.Errorf("tag of a cancelled create still held")
	}
}

// ---- 5. not-ready diagnostics -----------------------------------------------

func TestNotReadyCarriesTheOutputTailAndExitStatus(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	script := "for i in $(seq 1 50); do echo line$i; done; echo 'Address already in use' >&2; exit 3"
	_, err := sc.createRaw(ctxT(t), map[string]any{"tag": "bad", "argv": sh(script), "stdout": "capture",
		"stderr": "stdout", "ready": map[string]any{"output": "^listening", "timeout": 20}})
	re, d := wantNotReady(t, "a tool that exits before it is ready", err)
	if d.ExitStatus == nil || d.ExitStatus.ExitCode == nil || *d.ExitStatus.ExitCode != 3 {
		t.Errorf("data.exit_status %+v, want exit_code 3 (data %s)", d.ExitStatus, re.Data)
	}
	if d.OutputTail == nil || !strings.HasSuffix(*d.OutputTail, "line50\nAddress already in use") ||
		strings.Contains(*d.OutputTail, "line30\n") {
		t.Errorf("data.output_tail %q: want the last 20 lines, ending with the error", show(d.OutputTail))
	}
	if !strings.Contains(re.Message, "Address already in use") {
		t.Errorf("message %q does not show the last output", re.Message)
	}
}

func TestNotReadyWithNothingCapturedHintsAtBlockBuffering(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	// Python block-buffers a pipe: the line is printed, but never reaches it.
	_, err := sc.createRaw(ctxT(t), map[string]any{"tag": "py", "stdout": "capture",
		"argv":  []string{"python3", "-c", "import time; print('READY'); time.sleep(600)"},
		"env":   map[string]any{"PYTHONUNBUFFERED": nil},
		"ready": map[string]any{"output": "^READY", "timeout": 1}})
	re, d := wantNotReady(t, "a block-buffered python tool", err)
	for _, hint := range []string{"nothing", "python", "-u", "PYTHONUNBUFFERED=1", "stdbuf -oL"} {
		if !strings.Contains(re.Message, hint) {
			t.Errorf("message %q lacks %q", re.Message, hint)
		}
	}
	if d.OutputTail == nil || *d.OutputTail != "" || d.ExitStatus != nil {
		t.Errorf("data %s: want output_tail \"\" and exit_status null", re.Data)
	}
}

// ---- 8. zero means zero -----------------------------------------------------

// slowTermScript exits 0 one second after SIGTERM: with any grace it ends
// with exit 0, with none it is SIGKILLed.
const slowTermScript = "trap 'sleep 1; exit 0' TERM; sleep 600 & wait"

// createSlowTerm creates a slowTermScript tool and waits until its trap is
// in place (SIGTERM caught, in /proc/<pid>/status SigCgt).
func createSlowTerm(t *testing.T, sc *sidecar, p client.CreateParams) {
	t.Helper()
	p.Argv = sh(slowTermScript)
	info := sc.create(p)
	end := time.Now().Add(callTimeout)
	for {
		if caught, _ := sigField(t, info.Pid, "SigCgt"); caught&(1<<(15-1)) != 0 {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("tool %d never caught SIGTERM", info.Pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func wantKilled(t *testing.T, what string, in client.ProcessInfo, err error) {
	t.Helper()
	if err != nil || in.Signal == nil || *in.Signal != "SIGKILL" {
		t.Errorf("%s: stop gave %+v (exit %v signal %v) %v; want SIGKILL at once, no grace", what, in, show(in.ExitCode), show(in.Signal), err)
	}
}

func TestZeroTimeoutsMeanZero(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	// stop {timeout: 0} with a long stop_timeout: no grace.
	createSlowTerm(t, sc, client.CreateParams{Tag: "t0", StopTimeout: client.Ptr(30.0)})
	in, err := sc.Stop(ctxT(t), client.StopParams{Tag: "t0", Timeout: client.Ptr(0.0)})
	wantKilled(t, "stop timeout 0", in, err)
	// create {stop_timeout: 0}.
	createSlowTerm(t, sc, client.CreateParams{Tag: "st0", StopTimeout: client.Ptr(0.0)})
	in, err = sc.Stop(ctxT(t), client.StopParams{Tag: "st0"})
	wantKilled(t, "stop_timeout 0", in, err)
	// ready {timeout: 0}: checked once, not for 10 s.
	_, err = sc.createRaw(ctxT(t), map[string]any{"tag": "r0", "argv": sh("sleep 0.5; touch ready; sleep 600"),
		"cwd": t.TempDir(), "ready": map[string]any{"path": "ready", "timeout": 0}})
	wantNotReady(t, "ready timeout 0", err)
	assertNotReadyToolGone(t, sc, "r0")
	// restart {window: 0}: no restart counts against max_restarts.
	_, err = sc.createRaw(ctxT(t), map[string]any{"tag": "w0", "argv": sh("exit 1"), "restart": map[string]any{
		"policy": "always", "max_restarts": 1, "window": 0, "backoff": map[string]any{"initial": 0, "max": 0}}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		awaitState(t, sc, "w0", "restarting")
	}
	sc.Stop(ctxT(t), client.StopParams{Tag: "w0"})
}

func TestStopTimeoutFlagZeroMeansNoGrace(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t, "--stop-timeout", "0")
	createSlowTerm(t, sc, client.CreateParams{Tag: "f0"})
	in, err := sc.Stop(ctxT(t), client.StopParams{Tag: "f0"})
	wantKilled(t, "--stop-timeout 0", in, err)
}

func TestStopTimeoutFlagRefusesNaNInfinityAndNegative(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"NaN", "Inf", "-Inf", "-1", "1e300"} {
		cmd := exec.Command(binary, "--stop-timeout", v)
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "--stop-timeout") {
			t.Errorf("--stop-timeout %s: %v, output %q; want exit 2 naming the flag", v, err, out)
		}
	}
}

func TestDurationsOutOfRangeAreRefusedNamingTheField(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	for _, c := range []struct{ params, field string }{
		{`{"tag":"a","argv":["/bin/true"],"stop_timeout":1e999}`, "stop_timeout"},
		{`{"tag":"b","argv":["/bin/true"],"stop_timeout":-0.001}`, "stop_timeout"},
		{`{"tag":"c","argv":["/bin/true"],"ready":{"path":"x","timeout":-1}}`, "ready"},
		{`{"tag":"d","argv":["/bin/true"],"restart":{"policy":"always","window":-5}}`, "restart"},
	} {
		err := sc.Call(ctxT(t), "create", json.RawMessage(c.params), nil)
		if re := wantCode(t, c.params, err, client.CodeInvalidParams); re != nil && !strings.Contains(re.Message, c.field) {
			t.Errorf("%s: message %q does not name %q", c.params, re.Message, c.field)
		}
	}
}

// ---- 10. a clean slate of signals -------------------------------------------

func TestToolsStartWithNoBlockedOrIgnoredSignals(t *testing.T) {
	t.Parallel()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is needed to start the sidecar with signals blocked and ignored")
	}
	// The host blocks SIGUSR1 and SIGALRM and ignores SIGTSTP, then execs
	// the sidecar (as some shells and Python programs do).
	// Signal 32, which the C library keeps for itself, ignored too (some
	// harnesses pass it on): set through the raw rt_sigaction system call.
	wrapper := `import ctypes, os, platform, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGALRM})
signal.signal(signal.SIGTSTP, signal.SIG_IGN)
nr = {"x86_64": 13, "aarch64": 134}.get(platform.machine())
if nr:
    act = (ctypes.c_ulong * 4)(1, 0, 0, 0)  # SIG_IGN
    ctypes.CDLL(None).syscall(nr, 32, ctypes.byref(act), None, 8)
os.execv(sys.argv[1], sys.argv[1:])`
	mark := randomID()
	c, err := client.Start(context.Background(), client.Options{Binary: py,
		Args: []string{"-c", wrapper, binary, "--parent-pid", strconv.Itoa(os.Getpid())},
		Env:  sidecarEnv(mark), Stderr: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	execChildren.Store(c.Pid(), true)
	t.Cleanup(func() { c.Kill(); c.Wait(); killMarked(envSidecar, mark) })
	if _, err := c.Hello(ctxT(t)); err != nil { // it serves: the exec is done
		t.Fatal(err)
	}
	// The sidecar itself did inherit the mask (the premise of the test; its
	// ignored SIGTSTP it turns into a handled one, see spawn_linux.go).
	const usr1, alrm = 1 << (10 - 1), 1 << (14 - 1)
	if blk, _ := sigMasks(t, c.Pid()); blk&usr1 == 0 || blk&alrm == 0 {
		t.Fatalf("sidecar SigBlk %x: the wrapper did not block SIGUSR1 and SIGALRM", blk)
	}
	info, err := c.Create(ctxT(t), client.CreateParams{Tag: "clean", Argv: []string{"/bin/sleep", "600"}})
	if err != nil {
		t.Fatal(err)
	}
	waitExe(t, info.Pid, "sleep")
	if blk, ign := sigMasks(t, info.Pid); blk != 0 || ign != 0 {
		t.Errorf("tool SigBlk %016x SigIgn %016x, want both 0", blk, ign)
	}
	c.Stop(ctxT(t), client.StopParams{Tag: "clean"})
}

// sigMasks reads SigBlk and SigIgn from /proc/<pid>/status.
func sigMasks(t *testing.T, pid int) (blk, ign uint64) {
	t.Helper()
	blk, _ = sigField(t, pid, "SigBlk")
	ign, _ = sigField(t, pid, "SigIgn")
	return blk, ign
}

// sigField reads one signal mask of /proc/<pid>/status.
func sigField(t *testing.T, pid int, name string) (uint64, bool) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return n, err == nil
		}
	}
	return 0, false
}
