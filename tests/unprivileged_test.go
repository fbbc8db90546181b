package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	client "procmgr/clients/go"
)

// Containment for ordinary users (issue 16). Most hosts do not run as root,
// and without a writable cgroup v2 subtree the sidecar has no cgroup mode:
// then a descendant that clears its environment and calls setsid carries no
// mark and leaves the tool's group and session. These tests run the host and
// its sidecar as an unprivileged user — a fresh uid that owns nothing, when
// the tests run as root (here and in CI) — and assert from /proc that such a
// descendant is gone when `stop` returns (found by ancestry), and that a
// double-forked one (adopted by the sidecar, attributable to no tool) is gone
// when `shutdown` returns and after the host is SIGKILLed. The same checks
// run in a delegated cgroup v2 subtree, where cgroup mode must work for the
// user and also covers the sidecar's own SIGKILL.

// ordinaryUser is who the tests run hosts as.
type ordinaryUser struct {
	uid, gid int
	cred     *syscall.Credential // nil: this process is an ordinary user already
	procmgr  string              // the sidecar binary, executable by the user
	testExe  string              // this test binary, executable by the user
	dir      string              // holds the copies ("" if none were made)
	err      error
}

var theOrdinaryUser = sync.OnceValue(func() *ordinaryUser {
	u := &ordinaryUser{uid: os.Getuid(), gid: os.Getgid(), procmgr: binary}
	exe, err := os.Executable()
	if err != nil {
		u.err = err
		return u
	}
	u.testExe = exe
	if os.Geteuid() != 0 {
		return u // we are one
	}
	// A uid no account uses: its processes are this run's only, and it owns
	// no file, no cgroup, nothing to signal but what it starts.
	passwd, _ := os.ReadFile("/etc/passwd")
	for {
		id := 200000 + rand.Intn(100000)
		if !strings.Contains(string(passwd), ":"+strconv.Itoa(id)+":") {
			u.uid, u.gid = id, id
			break
		}
	}
	u.cred = &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid), Groups: []uint32{}}
	// The binaries may live in directories only root may enter (go test's
	// build directory is 0700): copy them where the user can execute them.
	dir, err := os.MkdirTemp("", "procmgr-e2e-user-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		u.err = err
		return u
	}
	u.dir = dir
	ordinaryUserDir.Store(dir)
	for _, c := range []struct{ from, to *string }{{&binary, &u.procmgr}, {&exe, &u.testExe}} {
		to := filepath.Join(dir, filepath.Base(*c.from))
		if err := copyExecutable(*c.from, to); err != nil {
			u.err = err
			return u
		}
		*c.to = to
	}
	return u
})

// ordinaryUserDir is the directory of the copies, once made.
var ordinaryUserDir atomic.Value

// removeOrdinaryUserFiles deletes the copies, if any were made.
func removeOrdinaryUserFiles() {
	if dir, ok := ordinaryUserDir.Load().(string); ok {
		os.RemoveAll(dir)
	}
}

// copyExecutable copies from to to, executable by all. The copy is written
// by a cp child, not by this process: a write fd of ours would be inherited
// by whatever a parallel test forks at that moment, and exec of the copy
// fails with ETXTBSY ("text file busy") until that child has exec'd.
func copyExecutable(from, to string) error {
	if out, err := exec.Command("cp", from, to).CombinedOutput(); err != nil {
		return fmt.Errorf("cp %s %s: %v: %s", from, to, err, out)
	}
	return os.Chmod(to, 0o755) // whatever the umask
}

// needOrdinaryUser returns the user, or skips the test saying why.
func needOrdinaryUser(t *testing.T) *ordinaryUser {
	t.Helper()
	u := theOrdinaryUser()
	if u.err != nil {
		t.Skipf("cannot set up an unprivileged user for this test: %v", u.err)
	}
	if _, err := os.Stat("/usr/bin/setsid"); err != nil {
		t.Skip("needs /usr/bin/setsid and /usr/bin/env for the escaping trees")
	}
	return u
}

// ---- a host run as the user ---------------------------------------------
//
// The host is this test binary re-executed as the user (mode "user-host"):
// it starts the sidecar through the Go client, like any host, and relays the
// calls the test sends it as JSON lines ({"method", "params"} in, {"result",
// "error"} out).

const envUserArgs = "PROCMGR_E2E_USER_ARGS" // the sidecar's flags, as JSON

func userHostMain() int {
	out := json.NewEncoder(os.Stdout)
	var args []string
	if err := json.Unmarshal([]byte(os.Getenv(envUserArgs)), &args); err != nil {
		out.Encode(map[string]string{"error": "bad " + envUserArgs + ": " + err.Error()})
		return 2
	}
	c, err := client.Start(context.Background(), client.Options{Binary: os.Getenv(envHostBin), Args: args, Stderr: os.Stderr})
	if err != nil {
		out.Encode(map[string]string{"error": err.Error()})
		return 2
	}
	out.Encode(map[string]int{"sidecar": c.Pid()})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var req struct {
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		}
		reply := map[string]any{}
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			reply["error"] = err.Error()
		} else {
			var params any
			if len(req.Params) > 0 {
				params = req.Params
			}
			var res json.RawMessage
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			err := c.Call(ctx, req.Method, params, &res)
			cancel()
			reply["result"] = res
			if err != nil {
				reply["error"] = err.Error()
			}
		}
		out.Encode(reply)
	}
	return 0 // EOF: exiting closes the sidecar's stdin, as a host's end does
}

// userHost is the test's end of a host run as the user.
type userHost struct {
	t       *testing.T
	cmd     *exec.Cmd
	in      io.WriteCloser
	lines   chan []byte
	waited  chan struct{}
	mark    string
	stderr  *lockedBuffer
	sidecar procID
	hello   userHello
	strays  []procID // processes without our marks, killed at cleanup if need be
}

type userHello struct {
	Pid         int      `json:"pid"`
	Session     string   `json:"session"`
	Features    []string `json:"features"`
	WatchdogPid int      `json:"watchdog_pid"`
	Orphans     *int     `json:"orphans"`
}

// startUserHost starts a host as the user. cgroupDir, if set, is the cgroup
// the host is cloned into (a delegated subtree); its sidecar then must run in
// cgroup mode, else it must run without.
func startUserHost(t *testing.T, u *ordinaryUser, cgroupDir string) *userHost {
	t.Helper()
	var args []string
	if u.cred == nil && cgroupDir == "" {
		// An ordinary user may have a delegated subtree already (a systemd
		// user session): these checks are about running without one.
		args = append(args, "--no-cgroup")
	}
	argsJSON, _ := json.Marshal(append(args, "--stop-timeout", "1"))
	h := &userHost{t: t, mark: randomID(), stderr: &lockedBuffer{}, lines: make(chan []byte, 16), waited: make(chan struct{})}
	h.cmd = exec.Command(u.testExe)
	h.cmd.Env = append(sidecarEnv(h.mark), envHost+"=user-host", envHostBin+"="+u.procmgr, envUserArgs+"="+string(argsJSON))
	h.cmd.Dir = "/"
	h.cmd.Stderr = h.stderr
	attr := &syscall.SysProcAttr{Setpgid: true, Credential: u.cred}
	if cgroupDir != "" {
		fd, err := syscall.Open(cgroupDir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(fd)
		attr.UseCgroupFD, attr.CgroupFD = true, fd
	}
	h.cmd.SysProcAttr = attr
	h.in, _ = h.cmd.StdinPipe()
	out, _ := h.cmd.StdoutPipe()
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("starting a host as uid %d: %v", u.uid, err)
	}
	execChildren.Store(h.cmd.Process.Pid, true)
	go func() {
		defer close(h.lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			h.lines <- append([]byte(nil), sc.Bytes()...)
		}
	}()
	go func() { h.cmd.Wait(); close(h.waited) }()
	t.Cleanup(func() {
		h.in.Close()
		h.cmd.Process.Kill()
		<-h.waited
		execChildren.Delete(h.cmd.Process.Pid)
		killMarked(envSidecar, h.mark)
		for _, id := range h.strays {
			if !id.gone() {
				syscall.Kill(id.Pid, syscall.SIGKILL)
			}
		}
		if t.Failed() {
			t.Logf("host and sidecar stderr:\n%s", tail(h.stderr.String(), 6000))
		}
	})
	var first struct {
		Sidecar int    `json:"sidecar"`
		Error   string `json:"error"`
	}
	if err := json.Unmarshal(h.line(), &first); err != nil || first.Sidecar <= 1 {
		t.Fatalf("host as uid %d did not start a sidecar: %v %s", u.uid, err, first.Error)
	}
	h.sidecar = mustIdentify(t, first.Sidecar)
	if uid := processUid(first.Sidecar); uid != u.uid {
		t.Fatalf("sidecar %d runs as uid %d, want %d", first.Sidecar, uid, u.uid)
	}
	h.hello = h.helloNow()
	if h.hello.Session != "" {
		knownSessions.Store(h.hello.Session, true)
	}
	if got, want := slices.Contains(h.hello.Features, "cgroup"), cgroupDir != ""; got != want {
		t.Fatalf("sidecar as uid %d: cgroup mode %v, want %v (features %v)", u.uid, got, want, h.hello.Features)
	}
	return h
}

// line is the host's next output line.
func (h *userHost) line() []byte {
	h.t.Helper()
	select {
	case l, ok := <-h.lines:
		if !ok {
			h.t.Fatalf("host ended; stderr:\n%s", tail(h.stderr.String(), 3000))
		}
		return l
	case <-time.After(callTimeout):
		h.t.Fatalf("host said nothing for %v", callTimeout)
	}
	return nil
}

// call relays one call to the sidecar.
func (h *userHost) call(method string, params, result any) error {
	h.t.Helper()
	req, _ := json.Marshal(map[string]any{"method": method, "params": params})
	if params == nil {
		req, _ = json.Marshal(map[string]any{"method": method})
	}
	if _, err := h.in.Write(append(req, '\n')); err != nil {
		h.t.Fatalf("writing to host: %v", err)
	}
	var reply struct {
		Result json.RawMessage `json:"result"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal(h.line(), &reply); err != nil {
		h.t.Fatalf("host reply: %v", err)
	}
	if reply.Error != "" {
		return fmt.Errorf("%s: %s", method, reply.Error)
	}
	if result != nil {
		return json.Unmarshal(reply.Result, result)
	}
	return nil
}

func (h *userHost) must(method string, params, result any) {
	h.t.Helper()
	if err := h.call(method, params, result); err != nil {
		h.t.Fatal(err)
	}
}

func (h *userHost) helloNow() userHello {
	h.t.Helper()
	var hello userHello
	h.must("hello", nil, &hello)
	return hello
}

// firstLine waits for the tool's captured stdout to hold a line.
func (h *userHost) firstLine(tag string) string {
	h.t.Helper()
	end := time.Now().Add(callTimeout)
	for {
		var out struct {
			Data string `json:"data"`
		}
		h.must("read_output", map[string]any{"tag": tag, "wait": 1}, &out)
		if line, _, ok := strings.Cut(out.Data, "\n"); ok {
			return strings.TrimSpace(line)
		}
		if time.Now().After(end) {
			h.t.Fatalf("%s wrote no line on stdout in %v", tag, callTimeout)
		}
	}
}

// escaperOf creates tag running script, which prints the pid of the
// process that clears its environment and calls setsid, and returns that
// process once it has done both (checked in /proc).
func (h *userHost) escaperOf(u *ordinaryUser, tag, script string) procID {
	h.t.Helper()
	var info client.ProcessInfo
	h.must("create", map[string]any{"tag": tag, "argv": sh(script), "stdout": "capture"}, &info)
	pid, err := strconv.Atoi(h.firstLine(tag))
	if err != nil || pid <= 1 {
		h.t.Fatalf("%s printed no pid: %v", tag, err)
	}
	id := mustIdentify(h.t, pid)
	h.strays = append(h.strays, id)
	end := time.Now().Add(callTimeout)
	for {
		st, err := readStat(pid)
		env, _ := rawEnviron(pid)
		if err == nil && st.Comm == "sleep" && st.Sid == pid && len(env) == 0 {
			break // exec'd sleep: setsid done, environment empty
		}
		if err != nil || time.Now().After(end) {
			h.t.Fatalf("%s: process %d never became an env-less session leader running sleep: %s", tag, pid, describe(pid))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if uid := processUid(pid); uid != u.uid {
		h.t.Fatalf("%s: escaper runs as uid %d, want %d", tag, uid, u.uid)
	}
	return id
}

// The trees of the issue: a child that clears its environment and calls
// setsid (its parent, the tool, lives on), and the same double-forked, so
// that the sidecar adopts it when its parent exits at once.
const (
	treeEnvSetsidChild  = `/usr/bin/env -i /usr/bin/setsid /bin/sleep 600 & echo $!; wait`
	treeEnvSetsidOrphan = `(/usr/bin/env -i /usr/bin/setsid /bin/sleep 600 & echo $!); exec /bin/sleep 600`
)

// processUid is the real uid of pid, or -1.
func processUid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				uid, _ := strconv.Atoi(f[0])
				return uid
			}
		}
	}
	return -1
}

// assertDeadNow fails for every process that still runs: gone, or a zombie
// (dead, its exit not yet collected). Then it waits for the zombies to be
// reaped, which the sidecar (or the subreaper above it) must do.
func assertDeadNow(t *testing.T, what string, ids []procID) {
	t.Helper()
	var running []procID
	for _, id := range ids {
		if st, err := readStat(id.Pid); err == nil && st.Start == id.Start && st.State != 'Z' && st.State != 'X' {
			running = append(running, id)
		}
	}
	if len(running) > 0 {
		t.Errorf("%s: %d process(es) still running:\n%s", what, len(running), list(running))
		return
	}
	waitGone(t, what+" (reaped)", graceMargin, ids)
}

// waitOrphansCounted waits until the sidecar counts n adopted orphans, in
// hello (no tool's) and in list (each tool's).
func (h *userHost) waitOrphansCounted(n int) {
	h.t.Helper()
	end := time.Now().Add(callTimeout)
	for {
		hello := h.helloNow()
		if hello.Orphans == nil {
			h.t.Fatalf("hello has no orphans field")
		}
		var tools []struct {
			Tag     string `json:"tag"`
			Orphans *int   `json:"orphans"`
		}
		h.must("list", nil, &tools)
		got := *hello.Orphans
		for _, tl := range tools {
			if tl.Orphans == nil {
				h.t.Fatalf("list: %s has no orphans field", tl.Tag)
			}
			got += *tl.Orphans
		}
		if got == n {
			return
		}
		if time.Now().After(end) {
			h.t.Fatalf("sidecar counts %d adopted orphans, want %d", got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkOrdinaryUserTrees builds the trees as the user, stops the
// first, and ends the session with end; nothing may be left.
func checkOrdinaryUserTrees(t *testing.T, u *ordinaryUser, cgroupDir, end string) {
	h := startUserHost(t, u, cgroupDir)
	child := h.escaperOf(u, "env-setsid-child", treeEnvSetsidChild)
	orphan := h.escaperOf(u, "env-setsid-orphan", treeEnvSetsidOrphan)
	if cgroupDir != "" {
		for _, id := range []procID{child, orphan} {
			cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", id.Pid))
			if !strings.Contains(string(cg), "/"+filepath.Base(cgroupDir)+"/procmgr-"+h.hello.Session+"/") {
				t.Fatalf("escaper %d is not in the session cgroup below %s: %s", id.Pid, cgroupDir, cg)
			}
		}
	}
	// Adopted: its parent (the subshell) exited, so it is the sidecar's child.
	for deadline := time.Now().Add(callTimeout); ; time.Sleep(5 * time.Millisecond) {
		if st, err := readStat(orphan.Pid); err == nil && st.Ppid == h.sidecar.Pid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphan never re-parented to the sidecar %d: %s", h.sidecar.Pid, describe(orphan.Pid))
		}
	}
	h.waitOrphansCounted(1)

	var info client.ProcessInfo
	h.must("stop", map[string]any{"tag": "env-setsid-child"}, &info)
	assertDeadNow(t, "env-clearing setsid child when stop returned", []procID{child})
	if orphan.gone() {
		t.Fatalf("the other tool's orphan died with the stop of env-setsid-child")
	}

	switch end {
	case "shutdown":
		h.must("shutdown", nil, nil)
		assertDeadNow(t, "double-forked env-clearing setsid orphan when shutdown returned", []procID{orphan})
	case "host-SIGKILL":
		syscall.Kill(h.cmd.Process.Pid, syscall.SIGKILL)
		waitGone(t, "sidecar after its host's SIGKILL", graceMargin, []procID{h.sidecar})
		waitGone(t, "double-forked env-clearing setsid orphan after the host's SIGKILL", graceMargin, []procID{orphan})
	case "sidecar-SIGKILL":
		syscall.Kill(h.sidecar.Pid, syscall.SIGKILL)
		waitGone(t, "double-forked env-clearing setsid orphan after the sidecar's SIGKILL", graceMargin, []procID{orphan})
	default:
		t.Fatalf("unknown end %q", end)
	}
}

func TestOrdinaryUserWithoutCgroupLeavesNoEnvClearingSetsidDescendant(t *testing.T) {
	t.Parallel()
	u := needOrdinaryUser(t)
	for _, end := range []string{"shutdown", "host-SIGKILL"} {
		t.Run(end, func(t *testing.T) {
			t.Parallel()
			checkOrdinaryUserTrees(t, u, "", end)
		})
	}
}

// delegatedCgroup makes a fresh cgroup v2 directory below this process's own
// and delegates it to the user as systemd's Delegate=yes does: the directory
// and its cgroup.procs, cgroup.threads and cgroup.subtree_control belong to
// the user. Only root can do this; the test is skipped otherwise.
func delegatedCgroup(t *testing.T, u *ordinaryUser) string {
	t.Helper()
	if u.cred == nil {
		t.Skip("delegating a cgroup subtree to a test user needs root; run as root (CI does)")
	}
	if !cgroupWritable() {
		t.Skip("no writable cgroup v2 hierarchy here to delegate a subtree from")
	}
	dir := filepath.Join(cgroupRoot, "procmgr-e2e-delegated-"+randomID())
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Empty by now (the test's processes are gone); deepest first.
		end := time.Now().Add(graceMargin)
		for removeCgroupDirs(dir) != nil && time.Now().Before(end) {
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("delegated cgroup %s could not be removed", dir)
		}
	})
	for _, name := range []string{"", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"} {
		if err := os.Chown(filepath.Join(dir, name), u.uid, u.gid); err != nil {
			t.Fatalf("delegating %s: %v", dir, err)
		}
	}
	return dir
}

func removeCgroupDirs(dir string) error {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			removeCgroupDirs(filepath.Join(dir, e.Name()))
		}
	}
	return os.Remove(dir)
}

func TestOrdinaryUserInDelegatedCgroupSubtreeKeepsCgroupMode(t *testing.T) {
	t.Parallel()
	u := needOrdinaryUser(t)
	for _, end := range []string{"shutdown", "host-SIGKILL", "sidecar-SIGKILL"} {
		t.Run(end, func(t *testing.T) {
			t.Parallel()
			dir := delegatedCgroup(t, u)
			checkOrdinaryUserTrees(t, u, dir, end)
			// Every tool ran in the session's cgroup below the delegated
			// directory, and the session cleaned up its cgroups.
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if e.IsDir() && strings.HasPrefix(e.Name(), "procmgr-") {
					for end := time.Now().Add(graceMargin); ; time.Sleep(20 * time.Millisecond) {
						if _, err := os.Stat(filepath.Join(dir, e.Name())); err != nil {
							break
						}
						if time.Now().After(end) {
							t.Errorf("session cgroup %s left behind", e.Name())
							break
						}
					}
				}
			}
		})
	}
}

func TestOrdinaryUserSidecarSIGKILLTakesEnvClearingSetsidChildOfALiveMember(t *testing.T) {
	t.Parallel()
	// Without cgroup mode the watchdog sees the session's marks and its
	// session; a member that is not a direct tool (no parent-death signal)
	// outlives the sidecar for a moment, and its env-clearing setsid child is
	// found by ancestry while that parent lives.
	u := needOrdinaryUser(t)
	h := startUserHost(t, u, "")
	escaper := h.escaperOf(u, "nested", `/bin/sh -c "/usr/bin/env -i /usr/bin/setsid /bin/sleep 600 & echo \$!; wait" & wait`)
	syscall.Kill(h.sidecar.Pid, syscall.SIGKILL)
	waitGone(t, "env-clearing setsid child of a live member after the sidecar's SIGKILL", graceMargin, []procID{escaper})
}
