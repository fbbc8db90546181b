package manager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// One Manager per test process: its monitor reaps every child (wait4(-1)),
// so a second one would steal statuses from the first.
var (
	testMgr   *Manager
	exitsMu   sync.Mutex
	exitsSeen = map[int]int{} // pid → exited callbacks
)

func TestMain(m *testing.M) {
	var err error
	testMgr, err = New(Config{
		Session: fmt.Sprintf("unit-%d", os.Getpid()),
		Cgroups: os.Getenv("PROCMGR_TEST_NO_CGROUP") == "",
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnEvent: func(ev Event) {
			if ev.Kind != EventExited {
				return
			}
			exitsMu.Lock()
			exitsSeen[ev.Info.Pid]++
			exitsMu.Unlock()
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	testMgr.Shutdown(context.Background(), time.Second)
	os.Exit(code)
}

// withMarker returns processes whose command line contains marker.
func withMarker(t *testing.T, marker string) []string {
	t.Helper()
	var found []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(d + "/cmdline")
		if err != nil || !strings.Contains(string(b), marker) {
			continue
		}
		if st, err := os.ReadFile(d + "/stat"); err == nil && strings.Contains(string(st), ") Z ") {
			continue // dead, only not yet reaped
		}
		found = append(found, filepath.Base(d)+": "+strings.ReplaceAll(string(b), "\x00", " "))
	}
	return found
}

func gone(pid int) bool { return syscall.Kill(pid, 0) == syscall.ESRCH }

func TestSpawnFailureNamesTheReasonAndFreesTheTag(t *testing.T) {
	_, err := testMgr.Create(context.Background(), Spec{Tag: "missing", Argv: []string{"/nonexistent/tool"}})
	if !errors.Is(err, ErrSpawn) || !errors.Is(err, ErrExecNotFound) || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("err = %v, want ErrSpawn and ErrExecNotFound with the OS reason", err)
	}
	_, err = testMgr.Create(context.Background(), Spec{Tag: "notinpath", Argv: []string{"procmgr-no-such-command-xyz"}})
	if !errors.Is(err, ErrSpawn) || !errors.Is(err, ErrExecNotFound) {
		t.Fatalf("err = %v, want ErrSpawn and ErrExecNotFound", err)
	}
	if testMgr.Running("missing") {
		t.Fatal("a failed create left its tag in use")
	}
	_, err = testMgr.Create(context.Background(), Spec{Tag: "badcwd", Argv: []string{"true"}, Dir: "/nonexistent"})
	if !errors.Is(err, ErrSpawn) || errors.Is(err, ErrExecNotFound) || !strings.Contains(err.Error(), "cwd") {
		t.Fatalf("err = %v, want ErrSpawn naming the cwd", err)
	}
}

func TestStopLeavesNoMemberOfTheTreeEscapedOrNot(t *testing.T) {
	marker := fmt.Sprintf("3%06d", os.Getpid()%1000000)
	script := `trap "" TERM
setsid sleep ` + marker + `1 &
( sleep ` + marker + `2 & ) 
sleep ` + marker + `3 &
wait`
	in, err := testMgr.Create(context.Background(), Spec{Tag: "tree", Argv: []string{"sh", "-c", script}, StopTimeout: ptr(200 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the tree's 3 sleeps to start", func() bool { return len(withMarker(t, marker)) >= 3 })
	if _, err := testMgr.Stop(context.Background(), "tree", 0, 0); err != nil {
		t.Fatal(err)
	}
	if left := withMarker(t, marker); len(left) > 0 {
		t.Fatalf("after stop returned, members remain: %v", left)
	}
	if !gone(in.Pid) {
		t.Fatalf("leader %d still exists after stop", in.Pid)
	}
	if testMgr.Running("tree") {
		t.Fatal("tag still in use after stop")
	}
}

func TestExitIsReportedOnceWithItsStatus(t *testing.T) {
	in, err := testMgr.Create(context.Background(), Spec{Tag: "exit7", Argv: []string{"sh", "-c", "exit 7"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := testMgr.Wait(ctx, "exit7")
	if err != nil || !got.Exited || got.ExitCode != 7 || got.Signal != 0 {
		t.Fatalf("wait = %+v, %v; want exit code 7", got, err)
	}
	if !gone(in.Pid) {
		t.Fatal("the OS still shows the exited tool: not reaped")
	}
	if !testMgr.Running("exit7") {
		t.Fatal("running must stay true after a tool exits on its own, until stop")
	}
	testMgr.Stop(context.Background(), "exit7", 0, 0)
	exitsMu.Lock()
	n := exitsSeen[in.Pid]
	exitsMu.Unlock()
	if n != 1 {
		t.Fatalf("OnExit called %d times, want 1", n)
	}
}

func TestConcurrentCreatesOfOneTagAdmitExactlyOne(t *testing.T) {
	var ok, inUse atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := testMgr.Create(context.Background(), Spec{Tag: "race", Argv: []string{"sleep", "30"}})
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrTagInUse):
				inUse.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 || inUse.Load() != 15 {
		t.Fatalf("%d creates succeeded and %d saw the tag in use; want 1 and 15", ok.Load(), inUse.Load())
	}
	in, _ := testMgr.Fetch("race")
	testMgr.Stop(context.Background(), "race", 0, 0)
	if !gone(in.Pid) {
		t.Fatal("stopped tool still exists")
	}
}

func TestConcurrentStopsShareOneResult(t *testing.T) {
	in, err := testMgr.Create(context.Background(), Spec{Tag: "twice", Argv: []string{"sleep", "30"}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make([]Info, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], _ = testMgr.Stop(context.Background(), "twice", 0, 0)
		}()
	}
	wg.Wait()
	for _, r := range results {
		if r.Pid != in.Pid || r.Signal != syscall.SIGTERM {
			t.Fatalf("stop result %+v; want pid %d killed by SIGTERM", r, in.Pid)
		}
	}
	if !gone(in.Pid) {
		t.Fatal("tool still exists")
	}
}

func TestValidateTag(t *testing.T) {
	for _, tag := range []string{"", strings.Repeat("x", 129), "a\x00b", "tab\there", "\xff"} {
		if validateTag(tag) == nil {
			t.Errorf("tag %q accepted", tag)
		}
	}
	for _, tag := range []string{"a", strings.Repeat("é", 128), "with space", "ünïcode/日本"} {
		if err := validateTag(tag); err != nil {
			t.Errorf("tag %q refused: %v", tag, err)
		}
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"SIGTERM": syscall.SIGTERM, "term": syscall.SIGTERM, "9": syscall.SIGKILL, "SIGHUP": syscall.SIGHUP} {
		if got, err := ParseSignal(in); err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "SIGNOPE", "65"} {
		if _, err := ParseSignal(in); err == nil {
			t.Errorf("ParseSignal(%q) accepted", in)
		}
	}
}
