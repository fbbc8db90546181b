// Package tests holds the end-to-end tests of procmgr: they build the sidecar
// once, drive the real binary over its stdin/stdout, and assert on what the
// operating system shows (/proc, kill(pid, 0)), never only on the sidecar's
// own answers.
//
// Conventions (sidecar_test.go starts sidecars, proc_test.go reads /proc):
//   - Every process this run starts carries PROCMGR_E2E_RUN=<run id> in its
//     environment, and each sidecar (so each of its tools, unless created with
//     inherit_env false) a PROCMGR_E2E_SIDECAR=<id> of its own. Cleanup and the
//     final leak scan find processes by these markers and by the
//     PROCMGR_SESSION the sidecar gives its tools, so tests never touch
//     processes of other people's sessions on the same machine.
//   - The test process makes itself a child subreaper, so orphans of the trees
//     under test come back to it instead of PID 1; a zombie whose parent is the
//     test process is reaped here and counts as gone. A zombie whose parent is
//     anything else (the sidecar, PID 1) counts as NOT gone: it is a failure to
//     reap.
//   - Timing is never asserted. Deadlines are generous and only stop hangs.
package tests

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	envRun     = "PROCMGR_E2E_RUN"     // marks every process of this test run
	envSidecar = "PROCMGR_E2E_SIDECAR" // marks one sidecar and its tools
	envHost    = "PROCMGR_E2E_HOST"    // re-exec the test binary as a host (see hostMain in containment_test.go)
	envBin     = "PROCMGR_BIN"         // use this sidecar binary instead of building one
)

var (
	binary string // the sidecar under test
	runID  string
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envHost); mode != "" {
		os.Exit(hostMain(mode))
	}
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	runID = randomID()
	if b := os.Getenv(envBin); b != "" {
		abs, err := filepath.Abs(b)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tests:", err)
			return 1
		}
		binary = abs
	} else {
		dir, err := os.MkdirTemp("", "gotests-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "tests:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		binary = filepath.Join(dir, "procmgr")
		cmd := exec.Command("go", "build", "-o", binary, ".")
		cmd.Dir = ".." // the module root
		cmd.Stdout = os.Stderr
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "tests: building the sidecar failed:", err)
			return 1
		}
	}
	// Everything started from here on inherits the run marker.
	os.Setenv(envRun, runID)
	if err := setChildSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, "tests: cannot become a child subreaper:", err)
		return 1
	}

	code := m.Run()
	removeOrdinaryUserFiles()

	if leaks := sweepLeaks(); len(leaks) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d process(es) of this test run outlived their tests (killed now):\n", len(leaks))
		for _, l := range leaks {
			fmt.Fprintln(os.Stderr, "  ", l)
		}
		return 1
	}
	return code
}

func randomID() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func setChildSubreaper() error {
	const prSetChildSubreaper = 36
	_, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
	if e != 0 {
		return e
	}
	return nil
}

// sweepLeaks finds every live process of this run: those carrying our run
// marker, and those carrying a PROCMGR_SESSION that one of ours carries (a tool
// created with inherit_env false loses our marker but keeps its session). It
// SIGKILLs them, waits for them to go, and describes them.
func sweepLeaks() []string {
	self := os.Getpid()
	sessions := map[string]bool{}
	type cand struct {
		pid     int
		env     map[string]string
		session string
	}
	var all []cand
	for _, pid := range allPids() {
		if pid <= 1 || pid == self {
			continue
		}
		env, err := environ(pid)
		if err != nil {
			continue
		}
		c := cand{pid: pid, env: env, session: env["PROCMGR_SESSION"]}
		if env[envRun] == runID && c.session != "" {
			sessions[c.session] = true
		}
		all = append(all, c)
	}
	knownSessions.Range(func(k, _ any) bool { sessions[k.(string)] = true; return true })
	var leaks []string
	var ids []procID
	for _, c := range all {
		if c.env[envRun] != runID && !(c.session != "" && sessions[c.session]) {
			continue
		}
		id, err := identify(c.pid)
		if err != nil {
			continue
		}
		leaks = append(leaks, describe(c.pid))
		ids = append(ids, id)
		syscall.Kill(c.pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, id := range ids {
		for !id.gone() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	sort.Strings(leaks)
	return leaks
}

// describe is a one-line picture of a process for failure messages.
func describe(pid int) string {
	st, err := readStat(pid)
	if err != nil {
		return fmt.Sprintf("pid %d (gone)", pid)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return fmt.Sprintf("pid %d state %c ppid %d pgid %d sid %d: %s", pid, st.State, st.Ppid, st.Pgid, st.Sid,
		strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " ")))
}
