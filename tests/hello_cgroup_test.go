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
	data, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
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
