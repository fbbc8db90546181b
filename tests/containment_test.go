package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	client "procmgr/clients/go"
)

// The hard cases: real process trees, and every way the host or the sidecar
// can end. Each assertion is made on /proc and kill(pid, 0).

// graceMargin is added to stop timeouts when waiting for processes to go.
// It is not a performance bound, only a guard against hangs.
const graceMargin = 10 * time.Second

// ---- the host helper ------------------------------------------------------
//
// A "host" is this test binary re-executed with PROCMGR_E2E_HOST=<mode>: it
// starts the sidecar through the Go client exactly as a real host would, so the
// sidecar's parent is a process the test can kill.

const envHostBin = "PROCMGR_E2E_HOST_BIN"

// hostReport is what a host prints on its stdout, as one JSON line.
type hostReport struct {
	Sidecar int            `json:"sidecar"`
	Tools   map[string]int `json:"tools"` // tag -> pid
	Error   string         `json:"error,omitempty"`
}

// In the thread-exit host, the main goroutine keeps the main thread: the Go
// runtime never ends the main thread (it wedges it instead), so a goroutine
// that happened to run there would lock it, exit, and leave it alive — and
// the parent-death signal under test would never fire.
func init() {
	if os.Getenv(envHost) == "thread-exit" {
		runtime.LockOSThread()
	}
}

func hostMain(mode string) int {
	report := func(r hostReport) {
		b, _ := json.Marshal(r)
		os.Stdout.Write(append(b, '\n'))
	}
	fail := func(err error) int {
		report(hostReport{Error: err.Error()})
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := client.Options{Binary: os.Getenv(envHostBin), Args: []string{"--stop-timeout", "1"}, Stderr: os.Stderr}

	switch mode {
	case "sigkill":
		// Start tools with grandchildren and one that ignores SIGTERM, report
		// their pids, and on a line from stdin SIGKILL ourselves.
		c, err := client.Start(ctx, opts)
		if err != nil {
			return fail(err)
		}
		r := hostReport{Sidecar: c.Pid(), Tools: map[string]int{}}
		for tag, argv := range hostTools {
			info, err := c.Create(ctx, client.CreateParams{Tag: tag, Argv: argv, StopTimeout: client.Ptr(1.0)})
			if err != nil {
				return fail(err)
			}
			r.Tools[tag] = info.Pid
		}
		report(r)
		bufio.NewReader(os.Stdin).ReadString('\n')
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}

	case "thread-exit":
		// Spawn the sidecar from an OS thread that then exits while the
		// host lives on: the sidecar's parent-death signal fires, and it must
		// see that its parent is still there and keep serving.
		type started struct {
			c   *client.Client
			err error
		}
		// The sidecar logs (at debug level) that it saw the signal and
		// ignored it: that line, after the thread is gone, is the event to
		// wait for — a wrong reaction would be the sidecar ending instead.
		sidecarLog := &lockedBuffer{}
		opts.Stderr = io.MultiWriter(os.Stderr, sidecarLog)
		opts.Args = append(opts.Args, "--log-level", "debug")
		ch := make(chan started)
		tid := make(chan int, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			tid <- syscall.Gettid()
			c, err := client.Start(ctx, opts)
			if err == nil {
				// The first reply means the parent-death signal is armed
				// (main.go arms it before serving).
				_, err = c.Hello(ctx)
			}
			ch <- started{c, err}
		}()
		s := <-ch
		if s.err != nil {
			return fail(s.err)
		}
		c := s.c
		task := fmt.Sprintf("/proc/self/task/%d", <-tid)
		if err := pollUntil(30*time.Second, func() bool { _, err := os.Stat(task); return err != nil }); err != nil {
			return fail(fmt.Errorf("the spawning thread %s did not exit: %w", task, err))
		}
		const ignored = "parent-death signal ignored"
		if err := pollUntil(30*time.Second, func() bool { return strings.Contains(sidecarLog.String(), ignored) }); err != nil {
			return fail(fmt.Errorf("the sidecar never logged %q after its spawning thread exited: %w", ignored, err))
		}
		r := hostReport{Sidecar: c.Pid(), Tools: map[string]int{}}
		if _, err := c.Hello(ctx); err != nil {
			return fail(fmt.Errorf("hello after the spawning thread exited: %w", err))
		}
		info, err := c.Create(ctx, client.CreateParams{Tag: "after", Argv: []string{"/bin/sleep", "1000"}})
		if err != nil {
			return fail(fmt.Errorf("create after the spawning thread exited: %w", err))
		}
		r.Tools["after"] = info.Pid
		if alive, err := c.IsAlive(ctx, "after"); err != nil || !alive {
			return fail(fmt.Errorf("tool not alive: %v %v", alive, err))
		}
		if err := c.Close(); err != nil {
			return fail(fmt.Errorf("close: %w", err))
		}
		report(r)
		return 0

	case "user-host":
		return userHostMain() // unprivileged_test.go
	}
	return fail(fmt.Errorf("unknown host mode %q", mode))
}

// hostTools are the trees a "sigkill" host starts, with their process counts.
var hostTools = map[string][]string{
	"plain":    {"/bin/sleep", "1000"},
	"tree":     sh("/bin/sleep 1000 & /bin/sleep 1000 & wait"),
	"deep":     sh(`/bin/sh -c "/bin/sleep 1000 & wait" & wait`),
	"stubborn": sh(`trap "" TERM; /bin/sleep 1000 & /bin/sleep 1000 & wait`),
}

var hostToolSizes = map[string]int{"plain": 1, "tree": 3, "deep": 3, "stubborn": 3}

type host struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	report hostReport
	waited chan struct{} // closed once the host has been reaped
}

// startHost runs a host in mode and reads its report.
func startHost(t *testing.T, mode string) *host {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	mark := randomID()
	stderr, err := os.CreateTemp(t.TempDir(), "host-stderr")
	if err != nil {
		t.Fatal(err)
	}
	h := &host{cmd: exec.Command(exe)}
	h.cmd.Env = append(sidecarEnv(mark), envHost+"="+mode, envHostBin+"="+binary)
	h.cmd.Stderr = stderr // a file: the sidecar and tools may hold it after the host died
	h.stdin, _ = h.cmd.StdinPipe()
	out, _ := h.cmd.StdoutPipe()
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	execChildren.Store(h.cmd.Process.Pid, true)
	waited := make(chan struct{})
	t.Cleanup(func() {
		h.cmd.Process.Kill()
		<-waited
		killMarked(envSidecar, mark)
		if t.Failed() {
			b, _ := os.ReadFile(stderr.Name())
			t.Logf("host and sidecar stderr:\n%s", tail(string(b), 6000))
		}
	})
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		lines <- line
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(callTimeout):
		go func() { h.cmd.Wait(); close(waited) }()
		t.Fatal("host did not report")
	}
	// Wait only after reading: exec closes the stdout pipe in Wait.
	go func() { h.cmd.Wait(); close(waited) }()
	h.waited = waited
	if err := json.Unmarshal([]byte(line), &h.report); err != nil || h.report.Error != "" {
		t.Fatalf("host report %q: %v", line, err)
	}
	return h
}

func TestHostSIGKILLedLeavesNoToolNorDescendant(t *testing.T) {
	t.Parallel()
	h := startHost(t, "sigkill")
	var ids []procID
	for tag, n := range hostToolSizes {
		ids = append(ids, waitGroupSize(t, h.report.Tools[tag], n)...)
	}
	session := toolSession(t, h.report.Tools["plain"])
	if session == "" {
		t.Fatal("tool has no PROCMGR_SESSION")
	}
	ids = append(ids, sessionMembers(session)...)
	ids = append(ids, mustIdentify(t, h.report.Sidecar))
	ids = dedupe(ids)

	io.WriteString(h.stdin, "die\n")
	<-h.waited
	if ws, ok := h.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("host did not die of SIGKILL: %v", h.cmd.ProcessState)
	}
	start := time.Now()
	// stop_timeout is 1 s: everything must go within 1 + 1 s; the margin
	// only keeps a broken sidecar from hanging the run.
	waitGone(t, "host's sidecar, tools and their descendants after host SIGKILL", 2*time.Second+graceMargin, ids)
	t.Logf("%d processes gone %v after the host died", len(ids), time.Since(start).Round(time.Millisecond))
	if left := sessionMembers(session); len(left) > 0 {
		t.Errorf("processes of the session remain:\n%s", list(left))
	}
}

func TestSidecarSurvivesExitOfHostThreadThatSpawnedIt(t *testing.T) {
	t.Parallel()
	h := startHost(t, "thread-exit")
	<-h.waited
	if !h.cmd.ProcessState.Success() {
		t.Fatalf("host: %v", h.cmd.ProcessState)
	}
	// Close shut it down cleanly: nothing of it remains.
	waitGone(t, "sidecar after Close", graceMargin, []procID{mustIdentifyOrZero(h.report.Sidecar), mustIdentifyOrZero(h.report.Tools["after"])})
}

func TestSidecarSIGKILLedTakesItsDirectToolsWithIt(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	var ids []procID
	for i, argv := range [][]string{
		{"/bin/sleep", "1000"},
		sh(`trap "" TERM HUP INT; exec /bin/sleep 1000`),
		sh(`exec /bin/sleep 1000`),
	} {
		info := sc.create(client.CreateParams{Tag: "t" + strconv.Itoa(i), Argv: argv})
		waitExe(t, info.Pid, "sleep")
		ids = append(ids, mustIdentify(t, info.Pid))
	}
	// A call pending when the sidecar dies fails with ErrSidecarGone, and so
	// does every later one (the Go client's contract, on the real thing).
	// The pending call is a create waiting for a readiness that never comes:
	// its tool, exec'd, shows in /proc that the call reached the sidecar.
	pending := make(chan error, 1)
	never := filepath.Join(t.TempDir(), "never")
	go func() {
		pending <- sc.Call(ctxT(t), "create", map[string]any{"tag": "pending", "argv": []string{"/bin/sleep", "1001"},
			"ready": map[string]any{"path": never, "timeout": 600}}, nil)
	}()
	ids = append(ids, waitChild(t, sc.Pid(), "/bin/sleep\x001001\x00"))
	if err := sc.Kill(); err != nil {
		t.Fatal(err)
	}
	sc.Wait()
	select {
	case err := <-pending:
		if !errors.Is(err, client.ErrSidecarGone) {
			t.Errorf("pending call when the sidecar died: %v, want ErrSidecarGone", err)
		}
	case <-time.After(callTimeout):
		t.Error("pending call did not return when the sidecar died")
	}
	if _, err := sc.Hello(ctxT(t)); !errors.Is(err, client.ErrSidecarGone) {
		t.Errorf("call after the sidecar died: %v, want ErrSidecarGone", err)
	}
	waitGone(t, "direct tools after the sidecar was SIGKILLed", graceMargin, ids)
}

// startTrees creates a tool with grandchildren and one whose whole group
// ignores SIGTERM (stop timeout 1 s) and returns every process of both.
func startTrees(t *testing.T, sc *sidecar) []procID {
	t.Helper()
	a := sc.create(client.CreateParams{Tag: "tree", Argv: hostTools["tree"]})
	b := sc.create(client.CreateParams{Tag: "stubborn", Argv: hostTools["stubborn"], StopTimeout: client.Ptr(1.0)})
	ids := waitGroupSize(t, a.Pgid, 3)
	return append(ids, waitGroupSize(t, b.Pgid, 3)...)
}

// waitExit waits for the sidecar to exit and fails unless its status is 0.
func waitExit(t *testing.T, sc *sidecar, why string) {
	t.Helper()
	select {
	case <-sc.Done():
	case <-time.After(1*time.Second + graceMargin):
		t.Fatalf("sidecar did not exit after %s", why)
	}
	if err := sc.Wait(); err != nil {
		t.Errorf("sidecar exit after %s: %v; want status 0", why, err)
	}
}

func TestStdinEOFStopsEveryToolThenSidecarExitsZero(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t, "--stop-timeout", "1")
	ids := startTrees(t, sc)
	sc.CloseInput()
	waitExit(t, sc, "EOF on stdin")
	assertGoneNow(t, "tools when the sidecar exited after EOF", ids)
}

func TestTerminationSignalToSidecarStopsEveryToolThenExitsZero(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			sc := startSidecar(t, "--stop-timeout", "1")
			ids := startTrees(t, sc)
			if pid := sc.Pid(); pid > 1 {
				syscall.Kill(pid, sig)
			}
			waitExit(t, sc, sig.String())
			assertGoneNow(t, "tools when the sidecar exited after "+sig.String(), ids)
		})
	}
}

func TestStopKillsGroupMemberThatIgnoresSIGTERM(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	// The leader dies of SIGTERM at once; its child ignores SIGTERM.
	info := sc.create(client.CreateParams{Tag: "split", Argv: sh(`/bin/sh -c 'trap "" TERM; exec /bin/sleep 1000' & wait`)})
	ids := waitGroupSize(t, info.Pgid, 2)
	for _, id := range ids {
		if id.Pid != info.Pid {
			waitExe(t, id.Pid, "sleep") // its trap is in place
		}
	}
	s, err := sc.Stop(ctxT(t), client.StopParams{Tag: "split", Timeout: client.Ptr(1.0)})
	if err != nil {
		t.Fatal(err)
	}
	if m := groupMembers(info.Pgid); len(m) > 0 {
		t.Errorf("group %d not empty when stop returned:\n%s", info.Pgid, list(m))
	}
	assertGoneNow(t, "group when stop returned", ids)
	if s.Signal == nil || *s.Signal != "SIGTERM" {
		t.Errorf("stop returned %+v; the leader died of SIGTERM", s)
	}
}

// fionread is how many bytes wait unread in a pipe.
func fionread(f *os.File) int {
	var n int32
	raw, err := f.SyscallConn()
	if err != nil {
		return -1
	}
	raw.Control(func(fd uintptr) {
		syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&n)))
	})
	return int(n)
}

func TestHostThatStopsReadingCannotBlockCleanup(t *testing.T) {
	t.Parallel()
	// A host that never reads: replies and "exited" notifications fill the
	// stdout pipe. EOF on stdin must still stop every tool and end the
	// sidecar; nothing may deadlock on the full pipe.
	sc := startRawSidecar(t)
	cmd, inW, outR, waited, mark := sc.cmd, sc.in, sc.out, sc.waited, sc.mark

	write := func(s string) {
		if _, err := inW.Write([]byte(s + "\n")); err != nil {
			t.Fatalf("writing: %v", err)
		}
	}
	write(request(1, "create", map[string]any{"tag": "keeper", "argv": []string{"/bin/sleep", "1000"}}))
	id := 2
	for fionread(outR) < 60000 && id < 2000 {
		for i := 0; i < 20; i++ {
			write(request(id, "create", map[string]any{"tag": "t" + strconv.Itoa(id), "argv": []string{"/bin/true"}}))
			id++
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d requests sent, %d bytes unread in the stdout pipe", id, fionread(outR))
	// Find the keeper from the OS: the sleep carrying this sidecar's marker.
	var keeper []procID
	for _, pid := range allPids() {
		if env, err := environ(pid); err == nil && env[envSidecar] == mark && env["PROCMGR_TAG"] == "keeper" {
			keeper = append(keeper, mustIdentifyOrZero(pid))
		}
	}
	if len(keeper) != 1 {
		t.Fatalf("found %d keeper processes, want 1", len(keeper))
	}
	inW.Close()
	waitGone(t, "keeper after EOF while stdout was full", 3*time.Second+graceMargin, keeper)
	select {
	case <-waited:
	case <-time.After(graceMargin):
		t.Errorf("sidecar still running %v after EOF with its stdout full", graceMargin)
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Errorf("sidecar died of %v", ws.Signal())
	}
}

func TestClosedStdoutDoesNotKillSidecarWithSIGPIPE(t *testing.T) {
	t.Parallel()
	sc := startRawSidecar(t)
	cmd, inW, outR, waited := sc.cmd, sc.in, sc.out, sc.waited

	fmt.Fprintln(inW, request(1, "create", map[string]any{"tag": "keeper", "argv": []string{"/bin/sleep", "1000"}}))
	// Notifications may come first; read up to the reply.
	br := bufio.NewReader(outR)
	var m rawMsg
	for string(m.ID) != "1" {
		m = rawMsg{}
		line, err := br.ReadString('\n')
		if err != nil || json.Unmarshal([]byte(line), &m) != nil || m.Error != nil {
			t.Fatalf("create reply %q: %v", line, err)
		}
	}
	var info client.ProcessInfo
	json.Unmarshal(m.Result, &info)
	keeper := mustIdentify(t, info.Pid)
	outR.Close() // the host stops listening
	// Provoke writes to the closed stdout: a reply and an "exited" notification.
	fmt.Fprintln(inW, request(2, "create", map[string]any{"tag": "quick", "argv": []string{"/bin/true"}}))
	fmt.Fprintln(inW, request(3, "hello", nil))
	time.Sleep(500 * time.Millisecond)
	inW.Close()
	select {
	case <-waited:
	case <-time.After(3*time.Second + graceMargin):
		t.Fatal("sidecar did not exit after EOF")
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Errorf("sidecar died of %v (writing to a closed stdout must not kill it)", ws.Signal())
	}
	assertGoneNow(t, "keeper when the sidecar exited", []procID{keeper})
}

func TestStopKillsDescendantThatLeftTheGroup(t *testing.T) {
	t.Parallel()
	// docs/protocol.md: stop also takes descendants that left the group but
	// carry the tool's PROCMGR_TAG/PROCMGR_SESSION.
	sc := startSidecar(t)
	info := sc.create(client.CreateParams{Tag: "escaper", Argv: sh("setsid /bin/sleep 1000 & wait")})
	mark := ""
	var escaped procID
	end := time.Now().Add(10 * time.Second)
	for escaped.Pid == 0 {
		for _, pid := range allPids() {
			env, err := environ(pid)
			if err != nil || env["PROCMGR_TAG"] != "escaper" || env[envSidecar] != sc.mark {
				continue
			}
			if st, err := readStat(pid); err == nil && st.Pgid != info.Pgid && st.Comm == "sleep" {
				escaped = mustIdentifyOrZero(pid)
				mark = env["PROCMGR_SESSION"]
			}
		}
		if time.Now().After(end) {
			t.Fatal("the setsid'd sleep did not appear")
		}
		time.Sleep(10 * time.Millisecond)
	}
	knownSessions.Store(mark, true)
	if _, err := sc.Stop(ctxT(t), client.StopParams{Tag: "escaper"}); err != nil {
		t.Fatal(err)
	}
	assertGoneNow(t, "descendant that left the group, when stop returned", []procID{escaped})
}

func TestDeathOfParentPidHostStopsEveryToolThenExitsZero(t *testing.T) {
	t.Parallel()
	// The host named by --parent-pid dies while the sidecar's stdin stays
	// open and its real parent (this test) lives: the pid watch alone must
	// notice.
	fake := exec.Command("/bin/sleep", "1000")
	if err := fake.Start(); err != nil {
		t.Fatal(err)
	}
	execChildren.Store(fake.Process.Pid, true)
	t.Cleanup(func() { fake.Process.Kill(); fake.Wait() })
	sc := startSidecarOpts(t, client.Options{Args: []string{"--parent-pid", strconv.Itoa(fake.Process.Pid), "--stop-timeout", "1"}})
	if _, err := sc.Hello(ctxT(t)); err != nil {
		t.Fatalf("sidecar with --parent-pid of a live non-parent process: %v", err)
	}
	ids := startTrees(t, sc)
	fake.Process.Kill()
	fake.Wait()
	waitExit(t, sc, "death of the --parent-pid process")
	assertGoneNow(t, "tools when the sidecar exited after its host died", ids)
}

func TestStdoutFdCannotBeTheProtocolStream(t *testing.T) {
	t.Parallel()
	for _, fd := range []string{"0", "1"} {
		for _, flag := range []string{"--stdout-fd", "--stderr-fd"} {
			// stdin is the pipe runRegistered closes: if it starts anyway,
			// EOF ends it.
			out, err := runRegistered(binary, flag, fd)
			if err == nil {
				t.Errorf("%s %s accepted (output %q); \"inherit\" output would go into the protocol pipes", flag, fd, out)
			}
		}
	}
}

func TestRepliesSurviveAHostThatPausesReading(t *testing.T) {
	t.Parallel()
	// The host stops reading until the stdout pipe is full, then resumes:
	// notifications may be dropped (bounded buffer), replies never.
	sc := startRawSidecar(t)
	inW, outR := sc.in, sc.out
	writeErr := make(chan error, 1)
	ids := 0
	var reqs []byte
	for ; ids < 400; ids++ {
		reqs = append(reqs, request(ids+1, "create", map[string]any{"tag": "t" + strconv.Itoa(ids), "argv": []string{"/bin/true"}})+"\n"...)
	}
	go func() { _, err := inW.Write(reqs); writeErr <- err }()
	end := time.Now().Add(callTimeout)
	for fionread(outR) < 60000 && time.Now().Before(end) {
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%d bytes waiting in the stdout pipe", fionread(outR))
	time.Sleep(500 * time.Millisecond) // stay stalled a little
	// Resume: every request gets its reply.
	msgs := make(chan rawMsg, 1024)
	go func() {
		defer close(msgs)
		br := bufio.NewReader(outR)
		for {
			line, err := br.ReadBytes('\n')
			if err != nil {
				return
			}
			var m rawMsg
			if json.Unmarshal(line, &m) != nil {
				t.Errorf("not JSON on stdout: %q", truncate(line))
				return
			}
			msgs <- m
		}
	}()
	got := map[string]bool{}
	notes := 0
	timeout := time.After(callTimeout)
	for len(got) < ids {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("stdout closed after %d of %d replies", len(got), ids)
			}
			if m.Method != "" {
				notes++
				continue
			}
			if m.Error != nil {
				t.Errorf("reply %s", m.raw)
			}
			got[string(m.ID)] = true
		case <-timeout:
			t.Fatalf("only %d of %d replies arrived after the host resumed reading", len(got), ids)
		}
	}
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d replies and %d notifications read", len(got), notes)
	fmt.Fprintln(inW, request(100000, "hello", nil))
	for {
		select {
		case m := <-msgs:
			if string(m.ID) == "100000" {
				inW.Close()
				return
			}
		case <-time.After(callTimeout):
			t.Fatal("no hello reply after the pause")
		}
	}
}

func TestOrphanedDescendantsAreReapedBySidecar(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	// The subshell exits at once: its sleep is orphaned while the tool runs
	// on, comes to the sidecar (a subreaper), and once it dies (killed here
	// when seen: a sleep of its own length could be over before a scan of
	// /proc on a loaded machine finds it) it must be reaped there.
	info := sc.create(client.CreateParams{Tag: "orphaner", Argv: sh(`( /bin/sleep 1000 & ); exec /bin/sleep 1000`)})
	var orphan procID
	end := time.Now().Add(10 * time.Second)
	for orphan.Pid == 0 {
		for _, id := range groupMembers(info.Pgid) {
			if st, err := readStat(id.Pid); err == nil && id.Pid != info.Pid && st.Ppid == sc.Pid() {
				orphan = id
			}
		}
		if time.Now().After(end) {
			t.Fatalf("no orphan reparented to the sidecar in group %d:\n%s", info.Pgid, list(groupMembers(info.Pgid)))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Once the orphan has exited it must not linger as the sidecar's zombie.
	if err := syscall.Kill(orphan.Pid, syscall.SIGKILL); err != nil { // in the tool's group, the sidecar's child: ours
		t.Fatal(err)
	}
	waitGone(t, "orphan after it exited", graceMargin, []procID{orphan})
	if a, err := sc.IsAlive(ctxT(t), "orphaner"); err != nil || !a {
		t.Errorf("the tool itself: is_alive %v %v", a, err)
	}
	for len(sc.Notifications()) > 0 {
		n := <-sc.Notifications()
		if p, err := n.Exited(); n.Method == "exited" && err == nil && p.Tag == "orphaner" {
			t.Errorf("exited sent for a descendant, not the tool's main process: %s", n.Params)
		}
	}
}

// rawSidecar is a sidecar driven through bare pipes, for tests of what a host
// does to its own ends of them (stops reading, closes them).
type rawSidecar struct {
	cmd    *exec.Cmd
	mark   string        // its envSidecar value, which its tools inherit
	in     *os.File      // the host's write end of the sidecar's stdin
	out    *os.File      // the host's read end of the sidecar's stdout
	waited chan struct{} // closed once the sidecar has been reaped
}

// startRawSidecar starts one in a session of its own. Its cleanup ends it as
// a host would, by EOF, so that it stops its tools and removes its cgroups,
// and kills it and whatever carries its mark only if that fails in time.
func startRawSidecar(t *testing.T) *rawSidecar {
	t.Helper()
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	mark := randomID()
	cmd := exec.Command(binary, "--parent-pid", strconv.Itoa(os.Getpid()))
	cmd.Stdin, cmd.Stdout = inR, outW
	cmd.Env = sidecarEnv(mark)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	inR.Close()
	outW.Close()
	execChildren.Store(cmd.Process.Pid, true)
	sc := &rawSidecar{cmd: cmd, mark: mark, in: inW, out: outR, waited: make(chan struct{})}
	go func() { cmd.Wait(); close(sc.waited) }()
	t.Cleanup(func() {
		inW.Close()
		outR.Close()
		select {
		case <-sc.waited:
		case <-time.After(callTimeout):
			cmd.Process.Kill()
			<-sc.waited
		}
		killMarked(envSidecar, mark)
	})
	return sc
}

// waitChild waits for a child of parent whose command line is cmdline
// (NUL-separated, as /proc shows it) and returns it.
func waitChild(t *testing.T, parent int, cmdline string) procID {
	t.Helper()
	end := time.Now().Add(callTimeout)
	for {
		for _, pid := range allPids() {
			st, err := readStat(pid)
			if err != nil || st.Ppid != parent {
				continue
			}
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); string(b) == cmdline {
				return procID{pid, st.Start}
			}
		}
		if time.Now().After(end) {
			t.Fatalf("waited %v for a child of %d running %q", callTimeout, parent, cmdline)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pollUntil polls cond until it holds or d passes (an error then).
func pollUntil(d time.Duration, cond func() bool) error {
	for end := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			return fmt.Errorf("still not so after %v", d)
		}
	}
	return nil
}
