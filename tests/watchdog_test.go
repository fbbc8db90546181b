package tests

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	client "procmgr/clients/go"
)

// The session watchdog (issue 4): when the sidecar is SIGKILLed, alone or
// together with its host, the descendants of its tools — which no
// parent-death signal reaches — must die too. Assertions are on /proc.

// watchdogHello is hello's result with the fields these tests read.
type watchdogHello struct {
	Pid         int      `json:"pid"`
	Session     string   `json:"session"`
	WatchdogPid int      `json:"watchdog_pid"`
	Features    []string `json:"features"`
}

func helloOf(t *testing.T, sc *sidecar) watchdogHello {
	t.Helper()
	var h watchdogHello
	if err := sc.Call(ctxT(t), "hello", nil, &h); err != nil {
		t.Fatalf("hello: %v", err)
	}
	if h.Session != "" {
		knownSessions.Store(h.Session, true)
	}
	return h
}

// watchdogOf checks from /proc that pid is this sidecar's watchdog and
// returns it.
func watchdogOf(t *testing.T, sc *sidecar, h watchdogHello) procID {
	t.Helper()
	if !slices.Contains(h.Features, "watchdog") || h.WatchdogPid <= 1 {
		t.Fatalf("no watchdog: hello %+v", h)
	}
	id := mustIdentify(t, h.WatchdogPid)
	st, _ := readStat(id.Pid)
	env, err := environ(id.Pid)
	if err != nil || st.Ppid != sc.Pid() || env[envSidecar] != sc.mark {
		t.Fatalf("watchdog_pid %d is not a child of sidecar %d carrying its mark: %s", id.Pid, sc.Pid(), describe(id.Pid))
	}
	return id
}

// escapingTrees are trees that a sidecar's SIGKILL alone does not end: only
// their direct tools carry the parent-death signal. Every process that lasts
// is a /bin/sleep or one of the shells counted in shells; the others (the
// daemon's launcher, which exits 0 by design, and its subshell) are
// transient and must not be mistaken for members.
var escapingTrees = []struct {
	tag    string
	argv   []string
	sleeps int // lasting /bin/sleep processes
	shells int // lasting shells (the main process that waits, a nested sh)
}{
	{"escaper", sh(`/usr/bin/setsid /bin/sleep 1000 & wait`), 1, 1},
	{"daemon", sh(`(/usr/bin/setsid /bin/sh -c "/bin/sleep 1000 & exec /bin/sleep 1000" &); exit 0`), 2, 0},
	{"grandchildren", sh(`/bin/sh -c "/bin/sleep 1000 & wait" & wait`), 1, 2},
	// Clears its environment but stays in the tool's group and session.
	{"envless", sh(`/usr/bin/env -i /bin/sleep 1000 & wait`), 1, 1},
}

// startEscapingTrees creates escapingTrees and returns every lasting process
// of them once all exist and the transient ones are gone, and the session.
func startEscapingTrees(t *testing.T, sc *sidecar) ([]procID, string) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/setsid"); err != nil {
		t.Skip("needs /usr/bin/setsid")
	}
	session := ""
	sleeps, total := 0, 0
	var envless, daemon int
	for _, tr := range escapingTrees {
		info := sc.create(client.CreateParams{Tag: tr.tag, Argv: tr.argv})
		switch tr.tag {
		case "envless":
			envless = info.Pgid
		case "escaper":
			session = toolSession(t, info.Pid)
		case "daemon":
			daemon = info.Pid
		}
		sleeps += tr.sleeps
		total += tr.sleeps + tr.shells
	}
	if session == "" {
		t.Fatal("tool has no PROCMGR_SESSION")
	}
	// Everything but the env-less sleep carries the session; that one is
	// found through its group, and no marker-based cleanup would find it:
	// kill what was seen of that group at the end, whatever happens.
	var seen []procID
	t.Cleanup(func() {
		for _, id := range seen {
			if cur, err := identify(id.Pid); err == nil && cur == id && id.Pid > 1 {
				syscall.Kill(id.Pid, syscall.SIGKILL)
			}
		}
	})
	daemonID, _ := identify(daemon) // it may already be gone: then any error is fine
	end := time.Now().Add(20 * time.Second)
	for {
		group := groupMembers(envless)
		seen = dedupe(append(seen, group...))
		ids := dedupe(append(sessionMembers(session), group...))
		n := 0
		for _, id := range ids {
			if st, err := readStat(id.Pid); err == nil && st.Comm == "sleep" {
				n++
			}
		}
		// The daemon's launcher gone and every sleep exec'd: what is left
		// is exactly the lasting processes.
		launcherGone := daemonID.Pid == 0 || daemonID.gone()
		if launcherGone && n == sleeps && len(ids) == total {
			return ids, session
		}
		if time.Now().After(end) {
			t.Fatalf("waited 20s for the escaping trees to settle (daemon launcher gone: %v, want %d sleeps of %d processes):\n%s",
				launcherGone, sleeps, total, list(ids))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sessionCgroupGone waits for the session cgroup directory to be removed.
func sessionCgroupGone(t *testing.T, session string) {
	t.Helper()
	if cgroupRoot == "" {
		return
	}
	dir := filepath.Join(cgroupRoot, "procmgr-"+session)
	end := time.Now().Add(graceMargin)
	for {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(end) {
			t.Errorf("session cgroup %s still there", dir)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cgroupModes are the two containment modes; a test run in one checks that
// the sidecar really is in it (wantCgroupMode).
var cgroupModes = []struct {
	name   string
	args   []string
	cgroup bool
}{{"cgroup", nil, true}, {"no-cgroup", []string{"--no-cgroup"}, false}}

// pidsOf lists the pids of ids.
func pidsOf(ids []procID) []int {
	pids := make([]int, len(ids))
	for i, id := range ids {
		pids[i] = id.Pid
	}
	return pids
}

func TestSidecarSIGKILLedLeavesNoDescendant(t *testing.T) {
	t.Parallel()
	for _, mode := range cgroupModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			sc := startSidecar(t, mode.args...)
			wd := watchdogOf(t, sc, helloOf(t, sc))
			ids, session := startEscapingTrees(t, sc)
			wantCgroupMode(t, sc, mode.cgroup, pidsOf(ids)...)
			if err := sc.Kill(); err != nil {
				t.Fatal(err)
			}
			sc.Wait()
			waitGone(t, "descendants of tools and the watchdog after the sidecar was SIGKILLed", graceMargin, append(ids, wd))
			if left := sessionMembers(session); len(left) > 0 {
				t.Errorf("processes of the session remain:\n%s", list(left))
			}
			sessionCgroupGone(t, session)
		})
	}
}

func TestWatchdogIsOneProcessOutsideTheSessionWhoseCostDoesNotGrowPerTool(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	h := helloOf(t, sc)
	wd := watchdogOf(t, sc, h)
	st, _ := readStat(wd.Pid)
	if st.Sid != wd.Pid || st.Pgid != wd.Pid {
		t.Errorf("watchdog is not in a session and group of its own (a kill of the sidecar's group would take it): %s", describe(wd.Pid))
	}
	env, _ := environ(wd.Pid)
	if _, ok := env["PROCMGR_SESSION"]; ok {
		t.Errorf("watchdog carries PROCMGR_SESSION=%s: a sweep would take it for a tool", env["PROCMGR_SESSION"])
	}
	if _, ok := env["PROCMGR_TAG"]; ok {
		t.Errorf("watchdog carries PROCMGR_TAG")
	}
	cost := func() (fdsN, threads int) {
		f, err := fds(wd.Pid)
		if err != nil {
			t.Fatalf("watchdog gone: %v", err)
		}
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(wd.Pid) + "/status")
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Threads:"); ok {
				threads, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		return len(f), threads
	}
	// No settling wait: the Go runtime may add a thread or two at any time
	// (more so on a loaded machine), but a cost per tool would add at least
	// one per tool, 20 here.
	const tools = 20
	fds0, threads0 := cost()
	for i := 0; i < tools; i++ {
		sc.create(client.CreateParams{Tag: "t" + strconv.Itoa(i), Argv: []string{"/bin/sleep", "1000"}})
	}
	if fds1, threads1 := cost(); fds1-fds0 >= tools/2 || threads1-threads0 >= tools/2 {
		t.Errorf("watchdog grew with %d tools: fds %d -> %d, threads %d -> %d", tools, fds0, fds1, threads0, threads1)
	}
	if h2 := helloOf(t, sc); h2.WatchdogPid != wd.Pid {
		t.Errorf("still one watchdog expected: %d, then %d", wd.Pid, h2.WatchdogPid)
	}
	// A normal exit ends it too, and the sidecar reaps it: no zombie of it
	// comes to this process.
	if err := sc.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	end := time.Now().Add(graceMargin)
	for {
		st, err := readStat(wd.Pid)
		if err != nil || st.Start != wd.Start {
			break
		}
		if st.State == 'Z' && st.Ppid == os.Getpid() {
			t.Errorf("the sidecar exited without reaping its watchdog: %s", describe(wd.Pid))
			break
		}
		if time.Now().After(end) {
			t.Errorf("watchdog still there after the sidecar exited: %s", describe(wd.Pid))
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitGone(t, "watchdog after a normal exit", graceMargin, []procID{wd})
}

func TestWatchdogThatDiesIsLoggedAndRestarted(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	wd := watchdogOf(t, sc, helloOf(t, sc))
	syscall.Kill(wd.Pid, syscall.SIGKILL) // ours: watchdogOf checked its parent and mark
	var next procID
	end := time.Now().Add(graceMargin)
	for next.Pid == 0 {
		if h := helloOf(t, sc); h.WatchdogPid > 1 && h.WatchdogPid != wd.Pid {
			next = watchdogOf(t, sc, h)
		} else if time.Now().After(end) {
			t.Fatalf("no new watchdog %v after the first was killed (hello %+v)", graceMargin, h)
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if !strings.Contains(sc.stderr.String(), "session watchdog died") {
		t.Errorf("the watchdog's death was not logged:\n%s", tail(sc.stderr.String(), 2000))
	}
	// The new one does the job.
	ids, session := startEscapingTrees(t, sc)
	sc.Kill()
	sc.Wait()
	waitGone(t, "descendants of tools after the sidecar was SIGKILLed, with a restarted watchdog", graceMargin, append(ids, next))
	if left := sessionMembers(session); len(left) > 0 {
		t.Errorf("processes of the session remain:\n%s", list(left))
	}
}

func TestSidecarDeathNeverTouchesAnotherLiveSession(t *testing.T) {
	t.Parallel()
	a := startSidecar(t)
	helloOf(t, a)
	aIDs, _ := startEscapingTrees(t, a)
	for _, mode := range cgroupModes {
		// One sidecar SIGKILLed, one closed normally: both watchdogs sweep.
		b := startSidecar(t, mode.args...)
		watchdogOf(t, b, helloOf(t, b))
		bIDs, _ := startEscapingTrees(t, b)
		wantCgroupMode(t, b, mode.cgroup, pidsOf(bIDs)...)
		b.Kill()
		b.Wait()
		waitGone(t, "the SIGKILLed sidecar's session", graceMargin, bIDs)
		c := startSidecar(t, mode.args...)
		watchdogOf(t, c, helloOf(t, c))
		cIDs, _ := startEscapingTrees(t, c)
		wantCgroupMode(t, c, mode.cgroup, pidsOf(cIDs)...)
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		waitGone(t, "the closed sidecar's session", graceMargin, cIDs)
	}
	for _, id := range aIDs {
		if st, err := readStat(id.Pid); err != nil || st.Start != id.Start || st.State == 'Z' {
			t.Errorf("a process of another live session died: pid %d", id.Pid)
		}
	}
}

// startChaosHost runs a trial host (chaos_test.go) with plan, in a process
// group of its own, and returns it once it is idle, with its events.
func startChaosHost(t *testing.T, plan chaosPlan) (*exec.Cmd, []chaosEvent, <-chan struct{}) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	trial := randomID()
	planJSON, _ := json.Marshal(plan)
	logf, err := os.CreateTemp(t.TempDir(), "host-stderr")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envChaosHost+"="+string(planJSON), envChaosTrial+"="+trial, envChaosBin+"="+binary)
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	execChildren.Store(cmd.Process.Pid, true)
	lines := make(chan chaosEvent, 256)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var e chaosEvent
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				lines <- e
			}
		}
	}()
	waited := make(chan struct{})
	go func() { <-scanned; cmd.Wait(); close(waited) }()
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		<-waited
		killMarked(envChaosTrial, trial)
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("host, sidecar and watchdog stderr:\n%s", tail(string(b), 6000))
		}
	})
	var events []chaosEvent
	timeout := time.After(callTimeout)
	for {
		select {
		case e, ok := <-lines:
			if !ok || e.Ev == "error" {
				t.Fatalf("host failed: %+v %+v", e, events)
			}
			events = append(events, e)
			if e.Ev == "hello" {
				knownSessions.Store(e.Session, true)
			}
			if e.Ev == "idle" {
				return cmd, events, waited
			}
		case <-timeout:
			t.Fatalf("host not idle after %v: %+v", callTimeout, events)
		}
	}
}

func TestHostAndSidecarSIGKILLedTogetherLeaveNothing(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/usr/bin/setsid"); err != nil {
		t.Skip("needs /usr/bin/setsid")
	}
	for _, mode := range cgroupModes {
		var tools []chaosTool
		for _, k := range chaosKinds {
			// The forker ends its loop on its own; the rest wait forever. The
			// env-clearing sleep would not count among the session's
			// processes. Without cgroups, the env-clearing setsid trees are
			// the one documented limit once the sidecar is SIGKILLed (their
			// parent dies of its parent-death signal at once, so no ancestry
			// leads to them: docs/containment.md; the chaos suite counts them
			// apart): they are left out there, or a moment of their fork,
			// still marked before its exec, would be taken for a member.
			if k.kind == "forker" || k.kind == "env-clearing" ||
				(mode.args != nil && strings.HasPrefix(k.kind, "env-setsid")) {
				continue
			}
			tools = append(tools, chaosTool{Kind: k.kind, Tag: k.kind, Argv: k.argv, StopTimeout: 1})
		}
		for _, raw := range []bool{false, true} {
			name := mode.name + "/own-session"
			if raw {
				name = mode.name + "/host-group" // kill -9 of the process group that holds both
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				cmd, events, waited := startChaosHost(t, chaosPlan{Args: mode.args, Raw: raw, Tools: tools})
				var session string
				var cg helloCgroup
				var ids []procID
				for _, e := range events {
					switch e.Ev {
					case "hello":
						session = e.Session
						if e.Cgroup != nil {
							cg = *e.Cgroup
						}
						ids = append(ids, mustIdentify(t, e.Pid), mustIdentify(t, e.Watchdog))
					case "created":
						if e.Tag != "double-fork-daemon" { // exits at once by design
							ids = append(ids, mustIdentifyOrZero(e.Pid))
						}
					}
				}
				// Every tree is complete: 1 + 4 + 3 + 2 + 2 live processes.
				end := time.Now().Add(graceMargin)
				for len(sessionMembers(session)) < 12 {
					if time.Now().After(end) {
						t.Fatalf("trees incomplete:\n%s", list(sessionMembers(session)))
					}
					time.Sleep(10 * time.Millisecond)
				}
				members := sessionMembers(session)
				checkCgroupMode(t, cg, session, ids[0].Pid, mode.cgroup, pidsOf(members))
				ids = append(ids, members...)
				host := cmd.Process.Pid
				if raw {
					if st, err := readStat(host); err != nil || st.Pgid != host || host <= 1 || host == syscall.Getpgrp() {
						t.Fatalf("host %d does not lead its own group", host)
					}
					syscall.Kill(-host, syscall.SIGKILL)
				} else {
					syscall.Kill(host, syscall.SIGKILL)
					syscall.Kill(ids[0].Pid, syscall.SIGKILL) // the sidecar (our grandchild, unreaped)
				}
				<-waited
				waitGone(t, "the session after host and sidecar were SIGKILLed together", graceMargin, dedupe(ids))
				if left := sessionMembers(session); len(left) > 0 {
					t.Errorf("processes of the session remain:\n%s", list(left))
				}
				sessionCgroupGone(t, session)
			})
		}
	}
}
