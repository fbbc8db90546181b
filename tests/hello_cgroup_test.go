package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	client "procmgr/clients/go"
)

// helloCgroup is hello's cgroup member (docs/protocol.md).
type helloCgroup struct {
	On     *bool  `json:"on"`
	Dir    string `json:"dir"`
	Reason string `json:"reason"`
}

func helloCgroupOf(t *testing.T, sc *sidecar) helloCgroup {
	t.Helper()
	var h struct {
		Cgroup *helloCgroup `json:"cgroup"`
	}
	if err := sc.Call(ctxT(t), "hello", nil, &h); err != nil {
		t.Fatal(err)
	}
	if h.Cgroup == nil || h.Cgroup.On == nil {
		t.Fatalf("hello has no cgroup.on: %+v", h.Cgroup)
	}
	return *h.Cgroup
}

func TestHelloSaysCgroupModeIsOffWithNoCgroupAndWhy(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t, "--no-cgroup")
	cg := helloCgroupOf(t, sc)
	if *cg.On || cg.Dir != "" || !strings.Contains(cg.Reason, "--no-cgroup") {
		t.Errorf("hello cgroup with --no-cgroup = %+v, want off because of --no-cgroup", cg)
	}
	// The Go client reads the same members.
	h, err := sc.Hello(ctxT(t))
	if err != nil || h.Cgroup.On || h.Cgroup.Reason != cg.Reason || h.WatchdogPid <= 0 || h.Orphans != 0 {
		t.Errorf("Go client Hello = %+v, %v; want cgroup off (%q), a watchdog, no orphans", h, err, cg.Reason)
	}
}

// Where cgroup mode is on, the directory hello names is the one the kernel
// puts the tool in.
func TestHelloNamesTheCgroupTheKernelPutsToolsIn(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	cg := helloCgroupOf(t, sc)
	if !*cg.On {
		if cg.Reason == "" || cg.Dir != "" {
			t.Fatalf("cgroup mode off: want a reason and no dir, got %+v", cg)
		}
		t.Skipf("cgroup mode is off here: %s", cg.Reason)
	}
	if cg.Reason != "" {
		t.Errorf("cgroup mode on with a reason to be off: %q", cg.Reason)
	}
	in := sc.create(client.CreateParams{Tag: "cg", Argv: []string{"sleep", "60"}})
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", in.Pid))
	if err != nil {
		t.Fatal(err)
	}
	own := ""
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			own = p
		}
	}
	if own == "" || !strings.HasPrefix(filepath.Join(cgroup2Mount(t), own), cg.Dir+"/") {
		t.Errorf("the kernel has tool %d in cgroup %q, hello names %q", in.Pid, own, cg.Dir)
	}
}

// A sidecar that is not root, on a host whose cgroup it may not write, says
// so in the words of the issue.
func TestHelloSaysWhyCgroupModeIsOffForANonRootSidecar(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to start the sidecar as another user")
	}
	// A copy every user may execute: the worktree may not be readable by nobody.
	bin := filepath.Join(t.TempDir(), "procmgr")
	if err := copyExecutable(binary, bin); err != nil {
		t.Fatal(err)
	}
	for dir := filepath.Dir(bin); dir != os.TempDir() && dir != "/"; dir = filepath.Dir(dir) {
		os.Chmod(dir, 0o755) // t.TempDir's directories are 0700
	}
	cmd := exec.Command(bin, "--log-level", "error")
	cmd.Env = sidecarEnv(randomID())
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	execChildren.Store(cmd.Process.Pid, true)
	defer execChildren.Delete(cmd.Process.Pid)
	done := make(chan struct{})
	defer func() { stdin.Close(); close(done); cmd.Wait() }()
	go func() {
		select { // bound the read below: the sidecar must answer hello at once
		case <-done:
		case <-time.After(time.Minute):
			cmd.Process.Kill()
		}
	}()
	fmt.Fprintln(stdin, `{"jsonrpc":"2.0","id":1,"method":"hello"}`)
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err != nil {
		t.Fatalf("no reply to hello from a sidecar run as nobody: %v", err)
	}
	var reply struct {
		Result struct {
			Cgroup helloCgroup `json:"cgroup"`
		} `json:"result"`
	}
	if err := json.Unmarshal(line, &reply); err != nil || reply.Result.Cgroup.On == nil {
		t.Fatalf("hello reply %s: %v", line, err)
	}
	cg := reply.Result.Cgroup
	if *cg.On {
		t.Skip("this host delegates a cgroup v2 subtree to nobody") // cannot show the off case here
	}
	if !strings.Contains(cg.Reason, "not root") && !strings.Contains(cg.Reason, "cgroup v2") {
		t.Errorf("cgroup off for a non-root sidecar because %q, want it to say why", cg.Reason)
	}
}

// cgroup2Mount reads where cgroup v2 is mounted, as the kernel says.
func cgroup2Mount(t *testing.T) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if pf, qf := strings.Fields(pre), strings.Fields(post); ok && len(pf) >= 5 && len(qf) > 0 && qf[0] == "cgroup2" {
			return pf[4]
		}
	}
	t.Fatal("no cgroup2 mount")
	return ""
}

// wantCgroupMode checks, from hello and from the kernel, that sc runs in the
// containment mode a test was written for, and fails the test at once if not:
// a "cgroup" subtest run without cgroups would test the other mode twice and
// pass. pids are live processes of sc's tools.
func wantCgroupMode(t *testing.T, sc *sidecar, on bool, pids ...int) {
	t.Helper()
	checkCgroupMode(t, helloCgroupOf(t, sc), helloOf(t, sc).Session, sc.Pid(), on, pids)
}

// checkCgroupMode checks a session's containment mode from its hello (cg,
// session) and the kernel. With on: hello says on and names the session's
// directory below this process's cgroup (where a sidecar started from here
// makes it), that directory exists, and /proc/<pid>/cgroup puts each of pids
// in an existing cgroup below it (one of its tool's). With !on: hello says
// off, and each of pids is in the sidecar's own cgroup. On a machine where
// cgroup mode cannot be on (no writable cgroup v2), a cgroup subtest fails
// here, loudly: it must not pass as a second no-cgroup run.
func checkCgroupMode(t *testing.T, cg helloCgroup, session string, sidecarPid int, on bool, pids []int) {
	t.Helper()
	if cg.On == nil || *cg.On != on {
		t.Fatalf("this test needs cgroup mode on=%v; hello says on=%v dir=%q reason=%q (a cgroup v2 this process may write: %v, at %q)",
			on, show(cg.On), cg.Dir, cg.Reason, cgroupWritable(), cgroupRoot)
	}
	if on {
		if want := filepath.Join(cgroupRoot, "procmgr-"+session); cg.Dir != want {
			t.Fatalf("hello names session cgroup %q, want %q (session %s, below this process's cgroup)", cg.Dir, want, session)
		}
		if fi, err := os.Stat(cg.Dir); err != nil || !fi.IsDir() {
			t.Fatalf("session cgroup %s: %v", cg.Dir, err)
		}
	}
	own := cgroupOf(t, sidecarPid)
	for _, pid := range pids {
		dir := cgroupOf(t, pid)
		if !on {
			if dir != own {
				t.Fatalf("without cgroup mode the kernel has tool process %d in cgroup %s, the sidecar in %s", pid, dir, own)
			}
			continue
		}
		if !strings.HasPrefix(dir, cg.Dir+"/") {
			t.Fatalf("the kernel has tool process %d in cgroup %s, not below the session's %s: %s", pid, dir, cg.Dir, describe(pid))
		}
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			t.Fatalf("cgroup %s of tool process %d: %v", dir, pid, err)
		}
	}
}

// cgroupOf is the directory of pid's cgroup v2 as /proc/<pid>/cgroup names it.
func cgroupOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatalf("cgroup of %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join(cgroup2Mount(t), p)
		}
	}
	t.Fatalf("process %d is in no cgroup v2: %q", pid, b)
	return ""
}
