package tests

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// This file reads the truth about processes from the OS.

// procStat is the part of /proc/<pid>/stat the tests use.
type procStat struct {
	Pid, Ppid, Pgid, Sid int
	State                byte
	Start                uint64 // start time in clock ticks after boot: tells a reused pid apart
	Comm                 string
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	s := string(b)
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open {
		return procStat{}, fmt.Errorf("bad stat %q", s)
	}
	f := strings.Fields(s[close+1:])
	// f[0] is field 3 (state); field n is f[n-3].
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("short stat %q", s)
	}
	st := procStat{Pid: pid, State: f[0][0], Comm: s[open+1 : close]}
	st.Ppid, _ = strconv.Atoi(f[1])
	st.Pgid, _ = strconv.Atoi(f[2])
	st.Sid, _ = strconv.Atoi(f[3])
	st.Start, _ = strconv.ParseUint(f[19], 10, 64)
	return st, nil
}

func allPids() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		panic(err)
	}
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// rawEnviron is a process's initial environment as /proc shows it.
//
// create returns once exec is past its point of no return, which can be a
// moment before the kernel publishes the new image's environment: it then
// reads empty (manager/proctable.go's envSettle deals with the same). An
// empty reading is taken again for up to 100 ms before it is believed.
func rawEnviron(pid int) ([]byte, error) {
	for end := time.Now().Add(100 * time.Millisecond); ; time.Sleep(time.Millisecond) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil || len(b) > 0 || time.Now().After(end) {
			return b, err
		}
	}
}

// environ is a process's initial environment.
func environ(pid int) (map[string]string, error) {
	b, err := rawEnviron(pid)
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env, nil
}

// knownSessions are PROCMGR_SESSION values seen on this run's tools.
var knownSessions sync.Map

// execChildren are pids this process started with os/exec: their zombies are
// reaped by exec.Cmd.Wait, never by wait4 here (that would steal the status).
var execChildren sync.Map

// procID names one process incarnation (pid + start time).
type procID struct {
	Pid   int
	Start uint64
}

func identify(pid int) (procID, error) {
	st, err := readStat(pid)
	if err != nil {
		return procID{}, err
	}
	return procID{pid, st.Start}, nil
}

func mustIdentify(t *testing.T, pid int) procID {
	t.Helper()
	id, err := identify(pid)
	if err != nil {
		t.Fatalf("process %d does not exist: %v", pid, err)
	}
	return id
}

// gone reports whether the process no longer exists. kill(pid, 0) == ESRCH
// or a different start time (pid reused) is gone. A zombie is gone only if
// its parent is this test process (an orphan that came to us as subreaper;
// it is reaped here). A zombie of any other parent — the sidecar, a tool,
// PID 1 — is NOT gone: someone failed to reap it.
func (p procID) gone() bool {
	if p.Pid <= 1 {
		panic("refusing to look at pid <= 1")
	}
	if err := syscall.Kill(p.Pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	st, err := readStat(p.Pid)
	if err != nil || st.Start != p.Start {
		return true
	}
	if st.State == 'Z' || st.State == 'X' {
		if st.Ppid == os.Getpid() {
			if _, ours := execChildren.Load(p.Pid); !ours {
				var ws syscall.WaitStatus
				syscall.Wait4(p.Pid, &ws, syscall.WNOHANG, nil)
			}
			return true
		}
	}
	return false
}

func (p procID) String() string { return describe(p.Pid) }

// survivors are the processes of ids that are not gone.
func survivors(ids []procID) []procID {
	var s []procID
	for _, id := range ids {
		if !id.gone() {
			s = append(s, id)
		}
	}
	return s
}

// assertGoneNow fails the test for every process of ids that still exists.
func assertGoneNow(t *testing.T, what string, ids []procID) {
	t.Helper()
	if s := survivors(ids); len(s) > 0 {
		t.Errorf("%s: %d process(es) remain:\n%s", what, len(s), list(s))
	}
}

// waitGone waits (up to a generous deadline that only prevents hangs) for
// every process of ids to be gone, and fails the test for those that remain.
func waitGone(t *testing.T, what string, deadline time.Duration, ids []procID) {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		s := survivors(ids)
		if len(s) == 0 {
			return
		}
		if time.Now().After(end) {
			t.Errorf("%s: %d process(es) still there after %v:\n%s", what, len(s), deadline, list(s))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func list(ids []procID) string {
	var b strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&b, "    %s\n", id)
	}
	return b.String()
}

// groupMembers are the processes (zombies included, unless ours to reap)
// whose process group is pgid.
func groupMembers(pgid int) []procID {
	if pgid <= 1 {
		panic("refusing to look at group <= 1")
	}
	var ids []procID
	for _, pid := range allPids() {
		st, err := readStat(pid)
		if err != nil || st.Pgid != pgid {
			continue
		}
		id := procID{pid, st.Start}
		if !id.gone() {
			ids = append(ids, id)
		}
	}
	return ids
}

// sessionMembers are the live processes whose environment has
// PROCMGR_SESSION=session.
func sessionMembers(session string) []procID {
	var ids []procID
	for _, pid := range allPids() {
		env, err := environ(pid)
		if err != nil || env["PROCMGR_SESSION"] != session {
			continue
		}
		if id, err := identify(pid); err == nil && !id.gone() {
			ids = append(ids, id)
		}
	}
	return ids
}

// waitGroupSize waits until process group pgid has at least n live members
// (a tool's children have been forked) and returns them.
func waitGroupSize(t *testing.T, pgid, n int) []procID {
	t.Helper()
	end := time.Now().Add(10 * time.Second)
	for {
		m := groupMembers(pgid)
		live := 0
		for _, id := range m {
			if st, err := readStat(id.Pid); err == nil && st.State != 'Z' {
				live++
			}
		}
		if live >= n {
			return m
		}
		if time.Now().After(end) {
			t.Fatalf("group %d has %d live members, want %d:\n%s", pgid, live, n, list(m))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// toolSession reads PROCMGR_SESSION from a tool's environment and remembers
// it for the leak sweep.
func toolSession(t *testing.T, pid int) string {
	t.Helper()
	env, err := environ(pid)
	if err != nil {
		t.Fatalf("reading environ of tool %d: %v", pid, err)
	}
	s := env["PROCMGR_SESSION"]
	if s != "" {
		knownSessions.Store(s, true)
	}
	return s
}

// fds lists a process's open file descriptors and what they point to.
func fds(pid int) (map[int]string, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	m := map[int]string{}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		target, _ := os.Readlink(dir + "/" + e.Name())
		m[n] = target
	}
	return m, nil
}

// killMarked SIGKILLs every process whose environment has key=value, or whose
// PROCMGR_SESSION is carried by such a process, and waits for them to go.
// It returns how many it found.
func killMarked(key, value string) int {
	self := os.Getpid()
	sessions := map[string]bool{}
	envs := map[int]map[string]string{}
	for _, pid := range allPids() {
		if pid <= 1 || pid == self {
			continue
		}
		env, err := environ(pid)
		if err != nil {
			continue
		}
		envs[pid] = env
		if env[key] == value && env["PROCMGR_SESSION"] != "" {
			sessions[env["PROCMGR_SESSION"]] = true
		}
	}
	var ids []procID
	for pid, env := range envs {
		if env[key] != value && !sessions[env["PROCMGR_SESSION"]] {
			continue
		}
		if id, err := identify(pid); err == nil {
			ids = append(ids, id)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	end := time.Now().Add(10 * time.Second)
	for len(survivors(ids)) > 0 && time.Now().Before(end) {
		time.Sleep(20 * time.Millisecond)
	}
	return len(ids)
}

func withoutPid(ids []procID, pid int) []procID {
	var out []procID
	for _, id := range ids {
		if id.Pid != pid {
			out = append(out, id)
		}
	}
	return out
}

// waitDead waits until pid is gone or a zombie: it has exited, whether or
// not its parent has reaped it yet (for a tool whose tag is still held).
func waitDead(t *testing.T, what string, pid int) {
	t.Helper()
	end := time.Now().Add(10 * time.Second)
	for {
		st, err := readStat(pid)
		if err != nil || st.State == 'Z' || st.State == 'X' {
			return
		}
		if time.Now().After(end) {
			t.Errorf("%s: still running: %s", what, describe(pid))
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dedupe(ids []procID) []procID {
	seen := map[procID]bool{}
	var out []procID
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// runRegistered runs a short-lived command and returns its combined output
// and exit error, like exec.Cmd.CombinedOutput — but the child is listed in
// execChildren before it can exit. This test process is a subreaper that
// reaps adopted zombies by pid; a direct child that died before being listed
// could be reaped by mistake, and its Wait would then fail with ECHILD. The
// child waits on a pipe (a shell's read, then exec of the command, same pid)
// until it is listed.
func runRegistered(name string, args ...string) ([]byte, error) {
	var out bytes.Buffer
	cmd := exec.Command("/bin/sh", append([]string{"-c", `read _ && exec "$@"`, "sh", name}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	go1, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	execChildren.Store(cmd.Process.Pid, true)
	go1.Write([]byte("go\n"))
	go1.Close()
	err = cmd.Wait()
	execChildren.Delete(cmd.Process.Pid)
	return out.Bytes(), err
}
