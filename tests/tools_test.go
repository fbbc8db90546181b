package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	client "procmgr/clients/go"
)

// What a tool gets from the sidecar: notifications about it, its environment,
// its file descriptors, its process group, where its output goes.

func TestExitedNotificationIsSentExactlyOncePerExit(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx := ctxT(t)
	pids := map[string]int{}
	pids["code3"] = sc.create(client.CreateParams{Tag: "code3", Argv: sh("exit 3")}).Pid
	pids["killed"] = sc.create(client.CreateParams{Tag: "killed", Argv: []string{"/bin/sleep", "1000"}}).Pid
	pids["stopped"] = sc.create(client.CreateParams{Tag: "stopped", Argv: []string{"/bin/sleep", "1000"}}).Pid
	pids["never"] = sc.create(client.CreateParams{Tag: "never", Argv: []string{"/bin/sleep", "1000"}}).Pid
	sc.WaitTool(ctx, "code3", nil)
	if err := sc.Signal(ctx, "killed", "SIGKILL"); err != nil {
		t.Fatal(err)
	}
	sc.WaitTool(ctx, "killed", nil)
	if _, err := sc.Stop(ctx, client.StopParams{Tag: "stopped"}); err != nil {
		t.Fatal(err)
	}
	// Stopping tools that already exited must not announce them again.
	sc.Stop(ctx, client.StopParams{Tag: "code3"})
	sc.Stop(ctx, client.StopParams{Tag: "killed"})
	// Fence: notifications go out in the order of their events, so once the
	// exit of a tool started after all of the above is announced, a late
	// duplicate of an earlier exit would have arrived before it.
	sc.create(client.CreateParams{Tag: "fence", Argv: sh("exit 0")})

	got := map[string][]client.ExitedParams{}
	timeout := time.After(callTimeout)
	for len(got["fence"]) == 0 {
		var n client.Notification
		select {
		case n = <-sc.Notifications():
		case <-timeout:
			t.Fatalf("waited %v for the fence tool's exited notification; got %+v", callTimeout, got)
		}
		if n.Method != "exited" {
			continue
		}
		p, err := n.Exited()
		if err != nil {
			t.Errorf("exited params %s: %v", n.Params, err)
			continue
		}
		got[p.Tag] = append(got[p.Tag], p)
	}
	if d := sc.DroppedNotifications(); d != 0 {
		t.Fatalf("client dropped %d notifications", d)
	}
	check := func(tag string, code *int, sig *string) {
		t.Helper()
		if len(got[tag]) != 1 {
			t.Errorf("%s: %d exited notifications, want exactly 1: %+v", tag, len(got[tag]), got[tag])
			return
		}
		p := got[tag][0]
		// info.state may still be "stopping" when the exit is the result of a
		// stop in progress; the main process has exited either way.
		if p.Pid != pids[tag] || p.Info.Pid != pids[tag] || p.Info.Tag != tag || p.Info.Alive ||
			(p.Info.State != "exited" && !(tag == "stopped" && p.Info.State == "stopping")) {
			t.Errorf("%s: exited %+v (pid %d)", tag, p, pids[tag])
		}
		if !eqPtr(p.ExitCode, code) || !eqPtr(p.Signal, sig) || !eqPtr(p.Info.ExitCode, code) || !eqPtr(p.Info.Signal, sig) {
			t.Errorf("%s: exited exit_code %v signal %v (info %v %v), want %v %v", tag,
				show(p.ExitCode), show(p.Signal), show(p.Info.ExitCode), show(p.Info.Signal), show(code), show(sig))
		}
		if p.Info.ExitedAt == nil {
			t.Errorf("%s: exited info has no exited_at", tag)
		}
	}
	check("code3", client.Ptr(3), nil)
	check("killed", nil, client.Ptr("SIGKILL"))
	check("stopped", nil, client.Ptr("SIGTERM"))
	if len(got["never"]) != 0 {
		t.Errorf("exited sent for a tool that runs: %+v", got["never"])
	}
}

func eqPtr[T comparable](a, b *T) bool {
	return (a == nil && b == nil) || (a != nil && b != nil && *a == *b)
}

func show[T any](p *T) any {
	if p == nil {
		return "null"
	}
	return *p
}

func TestToolEnvironmentCarriesTagAndSession(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	a := sc.create(client.CreateParams{Tag: "env-a", Argv: []string{"/bin/sleep", "1000"}})
	b := sc.create(client.CreateParams{Tag: "env-b", Argv: []string{"/bin/sleep", "1000"},
		InheritEnv: client.Ptr(false), Env: map[string]string{"ONLY": "1"}})
	envA, err := environ(a.Pid)
	if err != nil {
		t.Fatal(err)
	}
	envB, err := environ(b.Pid)
	if err != nil {
		t.Fatal(err)
	}
	session := toolSession(t, a.Pid)
	if envA["PROCMGR_TAG"] != "env-a" || session == "" || envA[envRun] != runID {
		t.Errorf("tool env: PROCMGR_TAG=%q PROCMGR_SESSION=%q, inherited marker %q", envA["PROCMGR_TAG"], session, envA[envRun])
	}
	if envB["PROCMGR_TAG"] != "env-b" || envB["PROCMGR_SESSION"] != session || envB["ONLY"] != "1" {
		t.Errorf("inherit_env=false tool env %v; want PROCMGR_TAG, the same session, ONLY", envB)
	}
	if _, ok := envB["PATH"]; ok || envB[envRun] != "" {
		t.Errorf("inherit_env=false tool inherited the sidecar's environment: %v", envB)
	}
	if h, err := sc.Hello(ctxT(t)); err != nil || h.Session != session {
		t.Errorf("hello session %q (%v), tools carry PROCMGR_SESSION=%q", h.Session, err, session)
	}
	other := startSidecar(t)
	c := other.create(client.CreateParams{Tag: "env-a", Argv: []string{"/bin/sleep", "1000"}})
	if s := toolSession(t, c.Pid); s == "" || s == session {
		t.Errorf("two sidecars share PROCMGR_SESSION %q", s)
	}
}

func TestToolInheritsOnlyStdioAndStdinIsDevNull(t *testing.T) {
	t.Parallel()
	// Give the sidecar extra fds (as --stdout-fd/--stderr-fd) so that a leak
	// of them, or of the protocol pipes, would show.
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	defer outR.Close()
	defer errR.Close()
	sc := startSidecarOpts(t, client.Options{Args: []string{"--stdout-fd", "3", "--stderr-fd", "4"},
		ExtraFiles: []*os.File{outW, errW}})
	outW.Close()
	errW.Close()
	for _, p := range []client.CreateParams{
		{Tag: "discard", Argv: []string{"/bin/sleep", "1000"}},
		{Tag: "inherit", Argv: []string{"/bin/sleep", "1000"}, Stdout: client.OutputInherit, Stderr: client.OutputInherit},
	} {
		info := sc.create(p)
		// sleep itself opens files briefly at start (locale data): look once
		// it sleeps (its wchan says so), when only a leak can be open.
		end := time.Now().Add(20 * time.Second)
		for {
			wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", info.Pid))
			if strings.Contains(string(wchan), "nanosleep") {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("waited 20s for %s's sleep to be asleep (wchan %q)", p.Tag, wchan)
			}
			time.Sleep(10 * time.Millisecond)
		}
		got, err := fds(info.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 || got[0] == "" || got[1] == "" || got[2] == "" {
			t.Errorf("%s: tool fds %v; want exactly 0, 1, 2", p.Tag, got)
		}
		if got[0] != "/dev/null" {
			t.Errorf("%s: tool stdin is %q, want /dev/null", p.Tag, got[0])
		}
		sidecarFds, _ := fds(sc.Pid())
		if p.Tag == "discard" && (got[1] != "/dev/null" || got[2] != "/dev/null") {
			t.Errorf("discard: stdout %q stderr %q, want /dev/null", got[1], got[2])
		}
		if p.Tag == "inherit" && (got[1] != sidecarFds[3] || got[2] != sidecarFds[4]) {
			t.Errorf("inherit: stdout %q stderr %q, want the sidecar's fds 3 %q and 4 %q", got[1], got[2], sidecarFds[3], sidecarFds[4])
		}
		for _, n := range []int{0, 1} {
			if got[1] == sidecarFds[n] || got[2] == sidecarFds[n] {
				t.Errorf("%s: tool writes into the protocol pipe (%s)", p.Tag, sidecarFds[n])
			}
		}
	}
}

func TestToolLeadsItsOwnGroupOutsideTheHostsSession(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	info := sc.create(client.CreateParams{Tag: "g", Argv: []string{"/bin/sleep", "1000"}})
	st, err := readStat(info.Pid)
	if err != nil {
		t.Fatal(err)
	}
	me, _ := readStat(os.Getpid())
	side, _ := readStat(sc.Pid())
	if st.Pgid != info.Pid {
		t.Errorf("tool %d is in group %d, want its own", info.Pid, st.Pgid)
	}
	if st.Pgid == me.Pgid || st.Pgid == side.Pgid {
		t.Errorf("tool group %d is the host's (%d) or the sidecar's (%d)", st.Pgid, me.Pgid, side.Pgid)
	}
	// Terminal signals to the host's session (Ctrl-C) cannot reach it.
	if st.Sid == me.Sid {
		t.Errorf("tool is in the host's session %d", me.Sid)
	}
}

func TestInheritOutputGoesToNamedFdsNeverToProtocolStream(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	open := func(name string) *os.File {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	out, errf := open("out"), open("err")
	sc := startSidecarOpts(t, client.Options{Args: []string{"--stdout-fd", "3", "--stderr-fd", "4"},
		ExtraFiles: []*os.File{out, errf}})
	ctx := ctxT(t)
	script := func(tag string) []string { return sh("echo OUT-" + tag + "; echo ERR-" + tag + " >&2") }
	for _, p := range []client.CreateParams{
		{Tag: "both", Argv: script("both"), Stdout: client.OutputInherit, Stderr: client.OutputInherit},
		{Tag: "merged", Argv: script("merged"), Stdout: client.OutputInherit, Stderr: client.OutputStdout},
		{Tag: "quiet", Argv: script("quiet")},
	} {
		sc.create(p)
		if w, err := sc.WaitTool(ctx, p.Tag, nil); err != nil || w.State != "exited" {
			t.Fatalf("%s: %+v %v", p.Tag, w, err)
		}
	}
	o, _ := os.ReadFile(out.Name())
	e, _ := os.ReadFile(errf.Name())
	for _, want := range []string{"OUT-both", "OUT-merged", "ERR-merged"} {
		if !strings.Contains(string(o), want) {
			t.Errorf("--stdout-fd file lacks %s: %q", want, o)
		}
	}
	if !strings.Contains(string(e), "ERR-both") {
		t.Errorf("--stderr-fd file lacks ERR-both: %q", e)
	}
	if strings.Contains(string(o), "ERR-both") || strings.Contains(string(e), "OUT-") ||
		strings.Contains(string(o)+string(e), "quiet") {
		t.Errorf("output in the wrong place: stdout-fd %q, stderr-fd %q", o, e)
	}
	if regexp.MustCompile(`(?m)^(OUT|ERR)-`).MatchString(sc.stderr.String()) {
		t.Errorf("inherit output went to the sidecar's own stderr despite --stdout-fd")
	}
	// Protocol-stream cleanliness is checked by the client in cleanup.
}

func TestInheritOutputDefaultsToSidecarStderr(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx := ctxT(t)
	sc.create(client.CreateParams{Tag: "x", Argv: sh("echo OUT-default; echo ERR-default >&2"),
		Stdout: client.OutputInherit, Stderr: client.OutputInherit})
	sc.WaitTool(ctx, "x", nil)
	end := time.Now().Add(10 * time.Second)
	// Whole lines: the sidecar's log may quote the script itself.
	out, errl := regexp.MustCompile(`(?m)^OUT-default$`), regexp.MustCompile(`(?m)^ERR-default$`)
	for !(out.MatchString(sc.stderr.String()) && errl.MatchString(sc.stderr.String())) {
		if time.Now().After(end) {
			t.Fatalf("inherit output did not reach the sidecar's stderr:\n%s", tail(sc.stderr.String(), 2000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	sc.Hello(ctx) // the output must not have reached the protocol stream (checked in cleanup)
}

func TestFileOutputTruncatesOrAppends(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx := ctxT(t)
	path := filepath.Join(t.TempDir(), "log")
	run := func(tag, script string, stdout, stderr *client.Output) {
		t.Helper()
		sc.create(client.CreateParams{Tag: tag, Argv: sh(script), Stdout: stdout, Stderr: stderr})
		if w, err := sc.WaitTool(ctx, tag, nil); err != nil || w.ExitCode == nil || *w.ExitCode != 0 {
			t.Fatalf("%s: %+v %v", tag, w, err)
		}
	}
	expect := func(want string) {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil || string(b) != want {
			t.Errorf("file holds %q (%v), want %q", b, err, want)
		}
	}
	run("one", "echo one", client.OutputFile(path, false), nil)
	expect("one\n")
	run("two", "echo two", client.OutputFile(path, true), nil)
	expect("one\ntwo\n")
	run("three", "echo three", client.OutputFile(path, false), nil)
	expect("three\n")
	run("four", "echo four; echo err-four >&2", client.OutputFile(path, true), client.OutputStdout)
	expect("three\nfour\nerr-four\n")
	run("five", "echo five; echo err-five >&2", client.OutputDiscard, client.OutputFile(path, true))
	expect("three\nfour\nerr-four\nerr-five\n")
	// A file that cannot be opened is a spawn failure, and the tag stays free.
	_, err := sc.Create(ctx, client.CreateParams{Tag: "six", Argv: sh("echo six"),
		Stdout: client.OutputFile(filepath.Join(path, "not-a-dir", "x"), false)})
	if re := wantCode(t, "create with an unopenable output file", err, client.CodeSpawnFailed); re != nil &&
		!strings.Contains(strings.ToLower(re.Message), "not a directory") {
		t.Errorf("message %q lacks the OS reason", re.Message)
	}
	if r, _ := sc.Running(ctx, "six"); r {
		t.Errorf("tag in use after a failed create")
	}
}

func TestLogFileReceivesTheLogInsteadOfStderr(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sidecar.log")
	sc := startSidecar(t, "--log-file", path, "--log-level", "debug")
	ctx := ctxT(t)
	sc.create(client.CreateParams{Tag: "logged", Argv: []string{"/bin/sleep", "1000"}})
	sc.Stop(ctx, client.StopParams{Tag: "logged"})
	if err := sc.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(b), "logged") {
		t.Errorf("log file %q (%v) does not mention the tool", tail(string(b), 2000), err)
	}
	if s := sc.stderr.String(); strings.Contains(s, "level=") {
		t.Errorf("log lines on stderr despite --log-file:\n%s", tail(s, 2000))
	}
}

func TestToolCannotBeGivenAnotherTagOrSession(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	h, err := sc.Hello(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	info, err := sc.Create(ctxT(t), client.CreateParams{Tag: "honest", Argv: []string{"/bin/sleep", "1000"},
		Env: map[string]string{"PROCMGR_TAG": "forged", "PROCMGR_SESSION": "forged"}})
	if rpcCode(err) == client.CodeInvalidParams {
		return // refusing the forgery is fine too
	}
	if err != nil {
		t.Fatal(err)
	}
	checkOneMark(t, info.Pid, "honest", h.Session)
}

// checkOneMark asserts that the tool's raw environment holds exactly one
// PROCMGR_TAG and one PROCMGR_SESSION, with the given values (with duplicate
// entries, getenv would see whichever comes first).
func checkOneMark(t *testing.T, pid int, tag, session string) {
	t.Helper()
	b, err := rawEnviron(pid)
	if err != nil {
		t.Fatal(err)
	}
	var tags, sessions []string
	for _, kv := range strings.Split(string(b), "\x00") {
		if v, ok := strings.CutPrefix(kv, "PROCMGR_TAG="); ok {
			tags = append(tags, v)
		}
		if v, ok := strings.CutPrefix(kv, "PROCMGR_SESSION="); ok {
			sessions = append(sessions, v)
		}
	}
	if len(tags) != 1 || tags[0] != tag || len(sessions) != 1 || sessions[0] != session {
		t.Errorf("tool environment has PROCMGR_TAG %q and PROCMGR_SESSION %q; want exactly [%s] and [%s]", tags, sessions, tag, session)
	}
}

func TestToolOfNestedSidecarCarriesOnlyTheInnerSession(t *testing.T) {
	t.Parallel()
	// A sidecar started from inside another session's tool inherits that
	// session's marks; its own tools must carry its own, once.
	env := append(os.Environ(), "PROCMGR_TAG=outer-tool", "PROCMGR_SESSION=outer-session")
	sc := startSidecarOpts(t, client.Options{Env: env})
	h, err := sc.Hello(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if h.Session == "outer-session" || h.Session == "" {
		t.Fatalf("nested sidecar session %q", h.Session)
	}
	info := sc.create(client.CreateParams{Tag: "inner", Argv: []string{"/bin/sleep", "1000"}})
	checkOneMark(t, info.Pid, "inner", h.Session)
}

func TestSidecarOpensNoSocket(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	sc.create(client.CreateParams{Tag: "s", Argv: []string{"/bin/sleep", "1000"}})
	if _, err := sc.Hello(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	got, err := fds(sc.Pid())
	if err != nil {
		t.Fatal(err)
	}
	for fd, target := range got {
		if strings.HasPrefix(target, "socket:") {
			t.Errorf("sidecar fd %d is a socket (%s)", fd, target)
		}
	}
}

func TestCreateWithArgumentsTheKernelRefusesFailsCleanly(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx := ctxT(t)
	cases := []struct {
		name string
		p    client.CreateParams
	}{
		{"NUL in argv", client.CreateParams{Argv: []string{"/bin/echo", "a\x00b"}}},
		{"NUL in env", client.CreateParams{Argv: []string{"/bin/sleep", "1000"}, Env: map[string]string{"A": "x\x00y"}}},
		{"= in env name", client.CreateParams{Argv: []string{"/bin/sleep", "1000"}, Env: map[string]string{"A=B": "x"}}},
		{"empty env name", client.CreateParams{Argv: []string{"/bin/sleep", "1000"}, Env: map[string]string{"": "x"}}},
		{"argument over 128 KiB", client.CreateParams{Argv: []string{"/bin/echo", strings.Repeat("a", 200<<10)}}},
	}
	for i, c := range cases {
		tag := "refused-" + strconv.Itoa(i)
		c.p.Tag = tag
		_, err := sc.Create(ctx, c.p)
		if code := rpcCode(err); code != client.CodeInvalidParams && code != client.CodeSpawnFailed {
			t.Errorf("%s: %v; want -32602 or -32003", c.name, err)
		}
		if r, err := sc.Running(ctx, tag); err != nil || r {
			t.Errorf("%s: tag in use after a refused create (%v)", c.name, err)
		}
	}
	if _, err := sc.Hello(ctx); err != nil {
		t.Errorf("hello after refused creates: %v", err)
	}
}
