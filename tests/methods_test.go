package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	client "procmgr/clients/go"
)

// Every method and every error code, through the Go client.

func TestHelloIdentifiesTheSidecar(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	h, err := sc.Hello(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if h.Name != "procmgr" || h.Protocol != 1 || h.Version == "" || h.Features == nil {
		t.Errorf("hello = %+v", h)
	}
	if h.Pid != sc.Pid() {
		t.Errorf("hello pid %d, the OS says the sidecar is %d", h.Pid, sc.Pid())
	}
	// The raw result must have exactly the documented keys' types.
	var raw map[string]json.RawMessage
	if err := sc.Call(ctxT(t), "hello", nil, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"name", "version", "protocol", "pid", "features"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("hello lacks %q: %v", k, raw)
		}
	}
	if !strings.HasPrefix(string(raw["features"]), "[") {
		t.Errorf("features is not an array: %s", raw["features"])
	}
}

func TestVersionAndHelpFlagsExitZeroWithoutServing(t *testing.T) {
	t.Parallel()
	out, err := runRegistered(binary, "--version")
	if err != nil {
		t.Fatalf("--version: %v\n%s", err, out)
	}
	sc := startSidecar(t)
	h, err := sc.Hello(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), h.Version) {
		t.Errorf("--version printed %q, hello says version %q", out, h.Version)
	}
	out, err = runRegistered(binary, "--help")
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, out)
	}
	for _, flag := range []string{"parent-pid", "stdout-fd", "stderr-fd", "log-file", "log-level",
		"framing", "max-message", "stop-timeout", "version"} {
		if !strings.Contains(string(out), flag) {
			t.Errorf("--help does not mention %s:\n%s", flag, out)
		}
	}
}

func TestCreateReturnsExecedToolLeadingItsOwnGroup(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	info := sc.create(client.CreateParams{Tag: "sleeper", Argv: []string{"/bin/sleep", "1000"}})
	// When create returns, the tool must already be the exec'd program: a
	// create that answered between fork and exec would show the sidecar here.
	exe, err := os.Readlink("/proc/" + strconv.Itoa(info.Pid) + "/exe")
	if err != nil {
		t.Fatalf("tool %d: %v", info.Pid, err)
	}
	want, _ := filepath.EvalSymlinks("/bin/sleep")
	if exe != want {
		t.Errorf("tool %d runs %q when create returned, want %q", info.Pid, exe, want)
	}
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(info.Pid) + "/cmdline")
	if got := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00"); !reflect.DeepEqual(got, []string{"/bin/sleep", "1000"}) {
		t.Errorf("tool argv %q", got)
	}
	st, err := readStat(info.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pgid != info.Pid || info.Pgid != info.Pid {
		t.Errorf("tool %d: OS pgid %d, reported pgid %d; want it to lead its own group", info.Pid, st.Pgid, info.Pgid)
	}
	if st.Ppid != sc.Pid() {
		t.Errorf("tool's parent is %d, want the sidecar %d", st.Ppid, sc.Pid())
	}
	if info.Tag != "sleeper" || !reflect.DeepEqual(info.Argv, []string{"/bin/sleep", "1000"}) ||
		info.State != "running" || !info.Alive || info.ExitCode != nil || info.Signal != nil ||
		info.ExitedAt != nil || info.StartedAt.IsZero() || time.Since(info.StartedAt) > time.Hour {
		t.Errorf("create returned %+v", info)
	}
}

func TestCreateLooksUpBareCommandInPATH(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	info := sc.create(client.CreateParams{Tag: "p", Argv: []string{"sleep", "1000"}})
	exe, _ := os.Readlink("/proc/" + strconv.Itoa(info.Pid) + "/exe")
	if filepath.Base(exe) != "sleep" {
		t.Errorf("tool runs %q", exe)
	}
}

func TestCreateWithTagInUseFailsWithTagInUse(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	first := sc.create(client.CreateParams{Tag: "dup", Argv: []string{"/bin/sleep", "1000"}})
	_, err := sc.Create(ctxT(t), client.CreateParams{Tag: "dup", Argv: []string{"/bin/sleep", "1000"}})
	if re := wantCode(t, "second create", err, client.CodeTagInUse); re != nil {
		wantDataTag(t, re, "dup")
	}
	// The first tool is untouched, and no second one was started.
	if id := mustIdentify(t, first.Pid); id.gone() {
		t.Error("first tool died")
	}
	list, err := sc.List(ctxT(t))
	if err != nil || len(list) != 1 || list[0].Pid != first.Pid {
		t.Errorf("list after duplicate create: %+v %v", list, err)
	}
}

func wantDataTag(t *testing.T, re *client.RPCError, tag string) {
	t.Helper()
	var d struct {
		Tag *string `json:"tag"`
	}
	if err := json.Unmarshal(re.Data, &d); err != nil || d.Tag == nil || *d.Tag != tag {
		t.Errorf("error data %s: want {\"tag\":%q}", re.Data, tag)
	}
}

func TestCreateThatCannotStartFailsWithOSReasonAndTagStaysFree(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		p       client.CreateParams
		reasons []string // the message must contain one of these (case-insensitive)
	}{
		{"missing executable", client.CreateParams{Argv: []string{filepath.Join(dir, "nope")}}, []string{"no such file"}},
		{"not in PATH", client.CreateParams{Argv: []string{"procmgr-no-such-command-xyz"}}, []string{"not found", "no such file"}},
		{"not executable", client.CreateParams{Argv: []string{notExec}}, []string{"permission denied"}},
		{"directory", client.CreateParams{Argv: []string{dir}}, []string{"permission denied", "is a directory"}},
		{"bad cwd", client.CreateParams{Argv: []string{"/bin/sleep", "1000"}, Cwd: filepath.Join(dir, "nowhere")}, []string{"no such file"}},
	}
	for i, c := range cases {
		tag := "bad-" + strconv.Itoa(i)
		c.p.Tag = tag
		_, err := sc.Create(ctxT(t), c.p)
		re := wantCode(t, c.name, err, client.CodeSpawnFailed)
		if re == nil {
			continue
		}
		msg := strings.ToLower(re.Message)
		found := false
		for _, r := range c.reasons {
			found = found || strings.Contains(msg, r)
		}
		if !found {
			t.Errorf("%s: message %q does not give the OS reason (%q)", c.name, re.Message, c.reasons)
		}
		wantDataTag(t, re, tag)
		if run, err := sc.Running(ctxT(t), tag); err != nil || run {
			t.Errorf("%s: running after failed create = %v, %v; want false", c.name, run, err)
		}
		if f, err := sc.Fetch(ctxT(t), tag); err != nil || f != nil {
			t.Errorf("%s: fetch after failed create = %+v, %v; want null", c.name, f, err)
		}
		// The tag is free: the same tag can be created at once.
		sc.create(client.CreateParams{Tag: tag, Argv: []string{"/bin/sleep", "1000"}})
	}
}

func TestCreateAcceptsTagsOf1To128PrintableCharsOnly(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	for _, tag := range []string{"a", strings.Repeat("x", 128), "with space/and:punct.é"} {
		sc.create(client.CreateParams{Tag: tag, Argv: []string{"/bin/sleep", "1000"}})
	}
	for _, tag := range []string{"", strings.Repeat("y", 129), "new\nline", "tab\there", "nul\x00", "zero\u200bwidth", "del\x7f"} {
		_, err := sc.Create(ctxT(t), client.CreateParams{Tag: tag, Argv: []string{"/bin/sleep", "1000"}})
		wantCode(t, "create tag "+strconv.Quote(tag), err, client.CodeInvalidParams)
	}
	list, err := sc.List(ctxT(t))
	if err != nil || len(list) != 3 {
		t.Errorf("list: %d tools, %v; want the 3 valid ones", len(list), err)
	}
}

func TestCreateHonoursCwdAndEnv(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	dir := t.TempDir()
	info := sc.create(client.CreateParams{Tag: "c", Argv: []string{"/bin/sleep", "1000"}, Cwd: dir,
		Env: map[string]string{"PROCMGR_E2E_FOO": "bar baz"}})
	cwd, err := os.Readlink("/proc/" + strconv.Itoa(info.Pid) + "/cwd")
	if err != nil || cwd != dir {
		t.Errorf("tool cwd %q (%v), want %q", cwd, err, dir)
	}
	env, err := environ(info.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if env["PROCMGR_E2E_FOO"] != "bar baz" || env["PATH"] == "" {
		t.Errorf("tool env lacks the given or inherited variables: FOO=%q PATH=%q", env["PROCMGR_E2E_FOO"], env["PATH"])
	}
}

func TestUnknownTagAnswers(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx := ctxT(t)
	if r, err := sc.Running(ctx, "ghost"); err != nil || r {
		t.Errorf("running(ghost) = %v, %v; want false", r, err)
	}
	if f, err := sc.Fetch(ctx, "ghost"); err != nil || f != nil {
		t.Errorf("fetch(ghost) = %+v, %v; want null", f, err)
	}
	var raw json.RawMessage
	if err := sc.Call(ctx, "fetch", map[string]string{"tag": "ghost"}, &raw); err != nil || string(raw) != "null" {
		t.Errorf("fetch(ghost) raw result %s, %v; want null", raw, err)
	}
	_, err := sc.IsAlive(ctx, "ghost")
	if re := wantCode(t, "is_alive(ghost)", err, client.CodeNoSuchTag); re != nil {
		wantDataTag(t, re, "ghost")
	}
	_, err = sc.Stop(ctx, client.StopParams{Tag: "ghost"})
	if re := wantCode(t, "stop(ghost)", err, client.CodeNoSuchTag); re != nil {
		wantDataTag(t, re, "ghost")
	}
	err = sc.Signal(ctx, "ghost", "SIGTERM")
	wantCode(t, "signal(ghost)", err, client.CodeNoSuchTag)
	_, err = sc.WaitTool(ctx, "ghost", client.Ptr(0.1))
	wantCode(t, "wait(ghost)", err, client.CodeNoSuchTag)
}

func TestRunningStaysTrueAfterToolExitsUntilStopReleasesTag(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx := ctxT(t)
	info := sc.create(client.CreateParams{Tag: "crash", Argv: sh("exit 5")})
	id := procID{Pid: info.Pid}
	w, err := sc.WaitTool(ctx, "crash", nil)
	if err != nil {
		t.Fatal(err)
	}
	if w.State != "exited" || w.Alive || w.ExitCode == nil || *w.ExitCode != 5 || w.Signal != nil || w.ExitedAt == nil {
		t.Errorf("wait after exit 5 = %+v", w)
	}
	// The sidecar may keep the exited leader as an unreaped zombie until stop
	// (so that its group id cannot be reused), but it must not be running.
	if st, err := readStat(id.Pid); err == nil && st.State != 'Z' && st.Ppid == sc.Pid() {
		t.Errorf("wait reported exit but tool %d still runs: %s", id.Pid, describe(id.Pid))
	}
	if r, err := sc.Running(ctx, "crash"); err != nil || !r {
		t.Errorf("running after crash = %v, %v; want true (seed semantics)", r, err)
	}
	if a, err := sc.IsAlive(ctx, "crash"); err != nil || a {
		t.Errorf("is_alive after crash = %v, %v; want false", a, err)
	}
	f, err := sc.Fetch(ctx, "crash")
	if err != nil || f == nil || f.State != "exited" || f.ExitCode == nil || *f.ExitCode != 5 {
		t.Errorf("fetch after crash = %+v, %v", f, err)
	}
	s, err := sc.Stop(ctx, client.StopParams{Tag: "crash"})
	if err != nil || s.State != "exited" || s.ExitCode == nil || *s.ExitCode != 5 {
		t.Errorf("stop of an exited tool = %+v, %v", s, err)
	}
	if r, err := sc.Running(ctx, "crash"); err != nil || r {
		t.Errorf("running after stop = %v, %v; want false", r, err)
	}
	sc.create(client.CreateParams{Tag: "crash", Argv: []string{"/bin/sleep", "1000"}})
}

func TestStopReleasesTagAndLeavesNothingOfTheGroup(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx := ctxT(t)
	info := sc.create(client.CreateParams{Tag: "tree", Argv: sh("/bin/sleep 1000 & /bin/sleep 1000 & wait")})
	members := waitGroupSize(t, info.Pgid, 3)
	s, err := sc.Stop(ctx, client.StopParams{Tag: "tree"})
	if err != nil {
		t.Fatal(err)
	}
	assertGoneNow(t, "tool group when stop returned", members)
	if m := groupMembers(info.Pgid); len(m) > 0 {
		t.Errorf("group %d not empty when stop returned:\n%s", info.Pgid, list(m))
	}
	if s.State != "exited" || s.Alive || s.Signal == nil || *s.Signal != "SIGTERM" || s.ExitCode != nil || s.ExitedAt == nil {
		t.Errorf("stop returned %+v; want exited by SIGTERM", s)
	}
	if r, err := sc.Running(ctx, "tree"); err != nil || r {
		t.Errorf("running after stop = %v, %v", r, err)
	}
	if _, err := sc.IsAlive(ctx, "tree"); rpcCode(err) != client.CodeNoSuchTag {
		t.Errorf("is_alive after stop: %v; want -32002", err)
	}
}

func TestStopAfterLeaderExitedKillsWhatIsLeftOfTheGroup(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx := ctxT(t)
	// The leader exits at once, leaving its child in the group.
	info := sc.create(client.CreateParams{Tag: "orphaning", Argv: sh("/bin/sleep 1000 & exit 0")})
	w, err := sc.WaitTool(ctx, "orphaning", nil)
	if err != nil || w.State != "exited" {
		t.Fatalf("wait: %+v %v", w, err)
	}
	left := groupMembers(info.Pgid)
	var child []procID
	for _, id := range left {
		if id.Pid != info.Pid {
			child = append(child, id)
		}
	}
	if len(child) != 1 {
		t.Fatalf("want the leader's sleep left in group %d, found:\n%s", info.Pgid, list(left))
	}
	if r, _ := sc.Running(ctx, "orphaning"); !r {
		t.Error("running = false after the leader exited; want true until stop")
	}
	if _, err := sc.Stop(ctx, client.StopParams{Tag: "orphaning"}); err != nil {
		t.Fatal(err)
	}
	assertGoneNow(t, "the leader's child when stop returned", child)
	if m := groupMembers(info.Pgid); len(m) > 0 {
		t.Errorf("group %d not empty when stop returned:\n%s", info.Pgid, list(m))
	}
}

func TestStopUsesGivenSignalAndCreateStopSignal(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx := ctxT(t)
	// The script exits 42 on SIGUSR1; on SIGTERM it would die of SIGTERM.
	script := `trap "exit 42" USR1; /bin/sleep 1000 & wait`
	for _, p := range []client.CreateParams{
		{Tag: "by-stop", Argv: sh(script)},
		{Tag: "by-name", Argv: sh(script), StopSignal: "SIGUSR1"},
		{Tag: "by-number", Argv: sh(script), StopSignal: int(syscall.SIGUSR1)},
	} {
		info := sc.create(p)
		waitGroupSize(t, info.Pgid, 2) // the sleep is forked, so the trap is set
	}
	for tag, p := range map[string]client.StopParams{
		"by-stop":   {Tag: "by-stop", Signal: "SIGUSR1"},
		"by-name":   {Tag: "by-name"},
		"by-number": {Tag: "by-number"},
	} {
		s, err := sc.Stop(ctx, p)
		if err != nil || s.ExitCode == nil || *s.ExitCode != 42 || s.Signal != nil {
			t.Errorf("%s: stop = %+v, %v; want exit code 42 from the USR1 trap", tag, s, err)
		}
	}
}

func TestStopTimeoutEscalatesToSIGKILL(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx := ctxT(t)
	info := sc.create(client.CreateParams{Tag: "stubborn", Argv: sh(`trap "" TERM; exec /bin/sleep 1000`),
		StopTimeout: client.Ptr(0.5)})
	waitExe(t, info.Pid, "sleep")
	s, err := sc.Stop(ctx, client.StopParams{Tag: "stubborn"})
	if err != nil || s.Signal == nil || *s.Signal != "SIGKILL" {
		t.Errorf("stop of a TERM-ignoring tool = %+v, %v; want killed by SIGKILL", s, err)
	}
	assertGoneNow(t, "stubborn tool", []procID{mustIdentifyOrZero(info.Pid)})

	info = sc.create(client.CreateParams{Tag: "stubborn2", Argv: sh(`trap "" TERM; exec /bin/sleep 1000`)})
	waitExe(t, info.Pid, "sleep")
	s, err = sc.Stop(ctx, client.StopParams{Tag: "stubborn2", Timeout: client.Ptr(0.3)})
	if err != nil || s.Signal == nil || *s.Signal != "SIGKILL" {
		t.Errorf("stop with timeout 0.3 = %+v, %v; want killed by SIGKILL", s, err)
	}
}

// mustIdentifyOrZero identifies a process that may already be gone.
func mustIdentifyOrZero(pid int) procID {
	id, err := identify(pid)
	if err != nil {
		return procID{Pid: pid, Start: ^uint64(0)}
	}
	return id
}

// waitExe waits until pid runs a program whose name ends in name (a shell
// script that execs it has got that far, so its traps are in place).
func waitExe(t *testing.T, pid int, name string) {
	t.Helper()
	end := time.Now().Add(10 * time.Second)
	for {
		exe, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
		if strings.HasSuffix(exe, "/"+name) {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("process %d runs %q, not %s", pid, exe, name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSignalReachesTheWholeGroup(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx := ctxT(t)
	for _, sig := range []any{"SIGKILL", 9} {
		tag := "sig-" + strings.Trim(string(mustJSON(sig)), `"`)
		info := sc.create(client.CreateParams{Tag: tag, Argv: sh("/bin/sleep 1000 & /bin/sleep 1000 & wait")})
		members := waitGroupSize(t, info.Pgid, 3)
		// SIGKILL to the leader alone would leave its children: only a
		// group-wide signal takes all three.
		if err := sc.Signal(ctx, tag, sig); err != nil {
			t.Fatalf("signal %v: %v", sig, err)
		}
		// The leader may stay a zombie of the sidecar until stop; the others
		// must go.
		waitGone(t, "group after signal "+tag, 10*time.Second, withoutPid(members, info.Pid))
		waitDead(t, "leader after signal "+tag, info.Pid)
		w, err := sc.WaitTool(ctx, tag, client.Ptr(10.0))
		if err != nil || w.Signal == nil || *w.Signal != "SIGKILL" || w.ExitCode != nil {
			t.Errorf("wait after %v = %+v, %v", sig, w, err)
		}
		// Still in use until stopped (seed semantics).
		if r, _ := sc.Running(ctx, tag); !r {
			t.Errorf("running after signal-kill = false, want true until stop")
		}
	}
	// Signalling a tool of which nothing remains is not an error (docs).
	if err := sc.Signal(ctx, "sig-9", "SIGTERM"); err != nil {
		t.Errorf("signal to a tool that already died: %v", err)
	}
	var raw json.RawMessage
	alive := sc.create(client.CreateParams{Tag: "alive", Argv: []string{"/bin/sleep", "1000"}})
	for _, sig := range []any{"SIGCONT", "CONT", "sigcont", int(syscall.SIGCONT)} {
		if err := sc.Signal(ctx, "alive", sig); err != nil {
			t.Errorf("signal %v: %v", sig, err)
		}
	}
	if mustIdentifyOrZero(alive.Pid).gone() {
		t.Fatal("SIGCONT killed the tool")
	}
	if err := sc.Call(ctx, "signal", map[string]any{"tag": "alive", "signal": "SIGCONT"}, &raw); err != nil || string(raw) != "null" {
		t.Errorf("signal result %s, %v; want null", raw, err)
	}
	for _, bad := range []any{"SIGNOPE", "", 100000, -1} {
		err := sc.Signal(ctx, "alive", bad)
		wantCode(t, "signal "+string(mustJSON(bad)), err, client.CodeInvalidParams)
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func TestWaitReturnsExitOrCurrentStateAtTimeout(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx := ctxT(t)
	sc.create(client.CreateParams{Tag: "long", Argv: []string{"/bin/sleep", "1000"}})
	w, err := sc.WaitTool(ctx, "long", client.Ptr(0.2))
	if err != nil || w.State != "running" || !w.Alive || w.ExitCode != nil {
		t.Errorf("wait with timeout on a running tool = %+v, %v", w, err)
	}
	sc.create(client.CreateParams{Tag: "short", Argv: sh("/bin/sleep 0.3; exit 3")})
	w, err = sc.WaitTool(ctx, "short", nil)
	if err != nil || w.State != "exited" || w.Alive || w.ExitCode == nil || *w.ExitCode != 3 || w.ExitedAt == nil {
		t.Errorf("wait on a tool exiting 3 = %+v, %v", w, err)
	}
	if w.ExitedAt != nil && w.ExitedAt.Before(w.StartedAt) {
		t.Errorf("exited_at %v before started_at %v", w.ExitedAt, w.StartedAt)
	}
}

func TestListIsSortedByTag(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx := ctxT(t)
	if l, err := sc.List(ctx); err != nil || l == nil || len(l) != 0 {
		var raw json.RawMessage
		sc.Call(ctx, "list", nil, &raw)
		t.Errorf("empty list = %v (%s), %v; want []", l, raw, err)
	}
	for _, tag := range []string{"m", "b", "z", "a"} {
		sc.create(client.CreateParams{Tag: tag, Argv: []string{"/bin/sleep", "1000"}})
	}
	l, err := sc.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var tags []string
	for _, p := range l {
		tags = append(tags, p.Tag)
		if p.Pid <= 1 || p.State != "running" {
			t.Errorf("list entry %+v", p)
		}
	}
	if !reflect.DeepEqual(tags, []string{"a", "b", "m", "z"}) {
		t.Errorf("list tags %q, want sorted", tags)
	}
}

func TestShutdownStopsEveryToolRepliesThenExitsZero(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx := ctxT(t)
	var ids []procID
	for _, tag := range []string{"one", "two", "three"} {
		info := sc.create(client.CreateParams{Tag: tag, Argv: sh("/bin/sleep 1000 & wait")})
		ids = append(ids, waitGroupSize(t, info.Pgid, 2)...)
	}
	exited := sc.create(client.CreateParams{Tag: "already-exited", Argv: sh("exit 0")})
	sc.WaitTool(ctx, exited.Tag, nil)
	n, err := sc.Shutdown(ctx, client.Ptr(2.0))
	if err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if n != 3 && n != 4 {
		t.Errorf("shutdown stopped %d, want 3 running tools (4 if the exited one counts)", n)
	}
	assertGoneNow(t, "tools when shutdown replied", ids)
	select {
	case <-sc.Done():
	case <-time.After(callTimeout):
		t.Fatal("sidecar did not exit after shutdown")
	}
	if err := sc.Wait(); err != nil {
		t.Errorf("sidecar exit after shutdown: %v; want status 0", err)
	}
}

func TestCreateDuringShutdownFailsWithShuttingDown(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx := ctxT(t)
	info := sc.create(client.CreateParams{Tag: "slow", Argv: sh(`trap "" TERM; exec /bin/sleep 1000`), StopTimeout: client.Ptr(2.0)})
	waitExe(t, info.Pid, "sleep")
	done := make(chan error, 1)
	go func() {
		_, err := sc.Shutdown(ctx, nil)
		done <- err
	}()
	// The shutdown has begun once the tool shows as "stopping" (it then
	// lasts 2 s, as the tool ignores SIGTERM).
	for {
		f, err := sc.Fetch(ctx, "slow")
		if err != nil {
			t.Fatalf("fetch during shutdown: %v", err)
		}
		if f != nil && f.State == "stopping" {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("shutdown finished (%v) before the tool showed as stopping", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	_, err := sc.Create(ctx, client.CreateParams{Tag: "late", Argv: []string{"/bin/sleep", "1000"}})
	if re := wantCode(t, "create during shutdown", err, client.CodeShuttingDown); re != nil {
		wantDataTag(t, re, "late")
		if re.Reason() != client.ReasonShuttingDown {
			t.Errorf("create during shutdown: reason %q, want %q", re.Reason(), client.ReasonShuttingDown)
		}
	}
	if err := <-done; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	assertGoneNow(t, "tool after shutdown", []procID{mustIdentifyOrZero(info.Pid)})
	sc.Wait()
}

func TestUnknownMethodFailsWithMethodNotFound(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	for _, m := range []string{"frobnicate", "Hello", "rpc.discover", "hello "} {
		err := sc.Call(ctxT(t), m, nil, nil)
		wantCode(t, "method "+strconv.Quote(m), err, client.CodeMethodNotFound)
	}
	if _, err := sc.Hello(ctxT(t)); err != nil {
		t.Errorf("hello after unknown methods: %v", err)
	}
}

func TestInvalidParamsFailWithInvalidParams(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	sc.create(client.CreateParams{Tag: "exists", Argv: []string{"/bin/sleep", "1000"}})
	for _, c := range invalidParamsCases() {
		err := sc.Call(ctxT(t), c.method, json.RawMessage(c.params), nil)
		re := wantCode(t, c.method+" "+truncate([]byte(c.params)), err, client.CodeInvalidParams)
		// Issue 2: an unknown field is rejected naming the field.
		if re != nil && c.unknown && !strings.Contains(re.Message, c.names) {
			t.Errorf("%s %s: message %q does not name the unknown field %q", c.method, c.params, re.Message, c.names)
		}
	}
	// Nothing was created or stopped by any of them, and the sidecar serves on.
	l, err := sc.List(ctxT(t))
	if err != nil || len(l) != 1 || l[0].Tag != "exists" || l[0].State != "running" {
		t.Errorf("after invalid calls list = %+v, %v; want only the running 'exists'", l, err)
	}
}

// TestInvalidParamsMessageNamesTheBadField holds the sidecar to
// docs/protocol.md: "a field of the wrong type is -32602 naming the field";
// and to the "bad input gets a clear error".
func TestInvalidParamsMessageNamesTheBadField(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	sc.create(client.CreateParams{Tag: "exists", Argv: []string{"/bin/sleep", "1000"}})
	for _, c := range invalidParamsCases() {
		if c.names == "" {
			continue
		}
		err := sc.Call(ctxT(t), c.method, json.RawMessage(c.params), nil)
		if re := wantCode(t, c.method+" "+truncate([]byte(c.params)), err, client.CodeInvalidParams); re != nil &&
			!strings.Contains(re.Message, c.names) {
			t.Errorf("%s %s: message %q does not name the field %q", c.method, c.params, re.Message, c.names)
		}
	}
}

type invalidParamsCase struct {
	method  string
	params  string
	names   string // the field the message should name
	unknown bool   // names is an unknown field
}

// invalidParamsCases are calls that must fail with -32602; "exists" is a
// running tool's tag.
func invalidParamsCases() []invalidParamsCase {
	long := strings.Repeat("z", 129)
	return []invalidParamsCase{
		{"hello", `{"frobnicate":1}`, "frobnicate", true},
		{"list", `{"frobnicate":1}`, "frobnicate", true},
		{"create", `{"tag":"n1","argv":["/bin/true"],"frobnicate":1}`, "frobnicate", true},
		{"running", `{"tag":"exists","frobnicate":1}`, "frobnicate", true},
		{"stop", `{"tag":"exists","frobnicate":1}`, "frobnicate", true},
		{"create", `{"tag":5,"argv":["/bin/true"]}`, "tag", false},
		{"create", `{"tag":"n2","argv":"/bin/true"}`, "argv", false},
		{"create", `{"tag":"n3","argv":[1]}`, "argv", false},
		{"create", `{"tag":"n4","argv":[]}`, "argv", false},
		{"create", `{"argv":["/bin/true"]}`, "tag", false},
		{"create", `{"tag":"n5"}`, "argv", false},
		{"create", `{"tag":"` + long + `","argv":["/bin/true"]}`, "", false},
		{"create", `{"tag":"n6","argv":["/bin/true"],"cwd":7}`, "cwd", false},
		{"create", `{"tag":"n7","argv":["/bin/true"],"env":{"A":1}}`, "env", false},
		{"create", `{"tag":"n8","argv":["/bin/true"],"env":["A=1"]}`, "env", false},
		{"create", `{"tag":"n9","argv":["/bin/true"],"inherit_env":"yes"}`, "inherit_env", false},
		{"create", `{"tag":"n10","argv":["/bin/true"],"stdout":"bogus"}`, "stdout", false},
		{"create", `{"tag":"n11","argv":["/bin/true"],"stdout":"stdout"}`, "stdout", false},
		{"create", `{"tag":"n12","argv":["/bin/true"],"stderr":{"file":5}}`, "stderr", false},
		{"create", `{"tag":"n13","argv":["/bin/true"],"stop_signal":"SIGNOPE"}`, "stop_signal", false},
		{"create", `{"tag":"n14","argv":["/bin/true"],"stop_timeout":"soon"}`, "stop_timeout", false},
		{"create", `{"tag":"n15","argv":["/bin/true"],"stop_timeout":-1}`, "stop_timeout", false},
		{"create", `{"tag":"n16","argv":["/bin/true"],"stop_timeout":86401}`, "stop_timeout", false},
		{"create", `{"tag":"n17","argv":["/bin/true"],"stop_signal":0}`, "stop_signal", false},
		{"create", `{"tag":"n18","argv":["/bin/true"],"stdout":{"append":true}}`, "", false},
		{"create", `{"tag":"n19","argv":["/bin/true"],"stdout":{"file":"/tmp/x","zork":1}}`, "zork", true},
		{"create", `{"tag":"n20","argv":["/bin/true"],"stdout":{"FILE":"/tmp/x"}}`, "FILE", true},
		{"wait", `{"tag":"exists","timeout":-1}`, "timeout", false},
		{"stop", `{"tag":"exists","timeout":-0.5}`, "timeout", false},
		{"running", `{"tag":7}`, "tag", false},
		{"running", `{}`, "tag", false},
		{"is_alive", `{"tag":["exists"]}`, "tag", false},
		{"fetch", `{}`, "tag", false},
		{"stop", `{"tag":"exists","timeout":"soon"}`, "timeout", false},
		{"stop", `{"tag":"exists","signal":{}}`, "signal", false},
		{"signal", `{"tag":"exists"}`, "signal", false},
		{"signal", `{"tag":"exists","signal":true}`, "signal", false},
		{"signal", `{"tag":"exists","signal":"SIGNOPE"}`, "signal", false},
		{"signal", `{"tag":"exists","signal":100000}`, "signal", false},
		{"wait", `{"tag":"exists","timeout":"soon"}`, "timeout", false},
		{"shutdown", `{"timeout":"soon"}`, "timeout", false},
	}
}
