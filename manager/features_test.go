package manager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func bg() context.Context { return context.Background() }

func ptr(d time.Duration) *time.Duration { return &d }

func waitSettled(t *testing.T, tag string) Info {
	t.Helper()
	ctx, cancel := context.WithTimeout(bg(), 20*time.Second)
	defer cancel()
	in, err := testMgr.Wait(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s did not settle within 20 s: %+v", tag, in)
	}
	return in
}

func stopAndCheckGone(t *testing.T, tag string) {
	t.Helper()
	in, err := testMgr.Stop(bg(), tag, 0, UseDefault)
	if err != nil {
		t.Fatal(err)
	}
	if !gone(in.Pid) {
		t.Fatalf("pid %d of %s still exists after stop", in.Pid, tag)
	}
}

func TestRingKeepsTheNewestBytesAndFlagsWhatWasLost(t *testing.T) {
	c, _ := newCapture(Capture{Size: 8})
	c.write([]byte("0123456789"))
	ch := c.read(0, 100)
	if string(ch.Data) != "23456789" || !ch.Overflow || ch.Start != 2 {
		t.Fatalf("read from 0 = %q overflow=%v start=%d; want the last 8 bytes, overflow, start 2", ch.Data, ch.Overflow, ch.Start)
	}
	c.write([]byte("abc"))
	ch = c.read(10, 100)
	if string(ch.Data) != "abc" || ch.Overflow {
		t.Fatalf("read from 10 = %q overflow=%v", ch.Data, ch.Overflow)
	}
	ch = c.read(-1, 3)
	if string(ch.Data) != "567" || ch.Start != 5 || ch.Overflow {
		t.Fatalf("read oldest = %q start=%d overflow=%v", ch.Data, ch.Start, ch.Overflow)
	}
}

func TestCapturedToolIsNeverBlockedOnAFullPipe(t *testing.T) {
	spec := Spec{Tag: "flood", Argv: []string{"sh", "-c", "head -c 20000000 /dev/zero; printf END"},
		Stdout: Output{Kind: Captured, Capture: Capture{Size: 64 << 10}}}
	if _, err := testMgr.Create(bg(), spec); err != nil {
		t.Fatal(err)
	}
	in := waitSettled(t, "flood")
	if in.ExitCode != 0 {
		t.Fatalf("flood exited %+v", in)
	}
	ctx, cancel := context.WithTimeout(bg(), 10*time.Second)
	defer cancel()
	testMgr.WaitOutput(ctx, "flood", "stdout", 20000003, 10*time.Second)
	ch, err := testMgr.ReadOutput(bg(), "flood", "stdout", 0, maxReadOutput, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !ch.Overflow || !bytes.HasSuffix(ch.Data, []byte("END")) || ch.Start+int64(len(ch.Data)) != 20000003 || !ch.EOF {
		t.Fatalf("overflow=%v eof=%v start=%d len=%d; want overflow, EOF, the last bytes ending in END at offset 20000003",
			ch.Overflow, ch.EOF, ch.Start, len(ch.Data))
	}
	stopAndCheckGone(t, "flood")
}

func TestTheLastBytesBeforeExitAreKept(t *testing.T) {
	spec := Spec{Tag: "last", Argv: []string{"sh", "-c", "printf first; printf ' last words' >&2; exit 3"},
		Stdout: Output{Kind: Captured}, Stderr: Output{Kind: Captured}}
	if _, err := testMgr.Create(bg(), spec); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, "last")
	out, _ := testMgr.ReadOutput(bg(), "last", "stdout", 0, 100, 5*time.Second)
	errOut, _ := testMgr.ReadOutput(bg(), "last", "stderr", 0, 100, 5*time.Second)
	if string(out.Data) != "first" || string(errOut.Data) != " last words" {
		t.Fatalf("stdout %q stderr %q", out.Data, errOut.Data)
	}
	stopAndCheckGone(t, "last")
}

func TestBackoffStaysWithinItsJitterBounds(t *testing.T) {
	p := RestartPolicy{InitialBackoff: ptr(100 * time.Millisecond), MaxBackoff: ptr(time.Second)}
	for n, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		want *= time.Millisecond
		for range 50 {
			if d := backoff(p, n); d < want/2 || d > want {
				t.Fatalf("backoff(n=%d) = %v, want within [%v, %v]", n, d, want/2, want)
			}
		}
	}
}

func TestOnFailureRestartsUntilFatal(t *testing.T) {
	spec := Spec{Tag: "crashy", Argv: []string{"sh", "-c", "exit 1"},
		Restart: RestartPolicy{When: RestartOnFailure, MaxRestarts: 2, InitialBackoff: ptr(10 * time.Millisecond), MaxBackoff: ptr(20 * time.Millisecond)}}
	first, err := testMgr.Create(bg(), spec)
	if err != nil {
		t.Fatal(err)
	}
	in := waitSettled(t, "crashy")
	if in.State != StateFatal || in.Restarts != 2 || in.Pid == first.Pid {
		t.Fatalf("settled as %+v; want fatal after 2 restarts with a new pid", in)
	}
	if !gone(first.Pid) || !gone(in.Pid) {
		t.Fatal("a run of the crashing tool still exists")
	}
	if !testMgr.Running("crashy") {
		t.Fatal("a fatal tool keeps its tag until stop")
	}
	stopAndCheckGone(t, "crashy")
}

func TestSuccessfulExitIsNotRestartedOnFailurePolicy(t *testing.T) {
	spec := Spec{Tag: "fine", Argv: []string{"true"},
		Restart: RestartPolicy{When: RestartOnFailure, MaxRestarts: 5, InitialBackoff: ptr(10 * time.Millisecond)}}
	if _, err := testMgr.Create(bg(), spec); err != nil {
		t.Fatal(err)
	}
	if in := waitSettled(t, "fine"); in.State != StateExited || in.Restarts != 0 {
		t.Fatalf("settled as %+v; want exited with no restart", in)
	}
	stopAndCheckGone(t, "fine")
}

func TestStopDuringBackoffCancelsTheRestart(t *testing.T) {
	marker := "backoff-marker-7361"
	spec := Spec{Tag: "slowback", Argv: []string{"sh", "-c", "exit 1", marker},
		Restart: RestartPolicy{When: RestartAlways, MaxRestarts: 5, InitialBackoff: ptr(400 * time.Millisecond), MaxBackoff: ptr(400 * time.Millisecond)}}
	_, err := testMgr.Create(bg(), spec)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the first run to exit and its restart to be pending", func() bool {
		in, ok := testMgr.Fetch("slowback")
		return ok && in.Exited && in.Restarts == 0
	})
	in, err := testMgr.Stop(bg(), "slowback", 0, 0)
	if err != nil || in.Restarts != 0 {
		t.Fatalf("stop during backoff: %+v, %v", in, err)
	}
	// Fence: a tool whose exit comes after the stop, with twice the backoff
	// (jitter puts a restart within [d/2, d]): once it has restarted, the
	// moment of the cancelled restart has passed too.
	fence := Spec{Tag: "slowback-fence", Argv: []string{"sh", "-c", "exit 1"},
		Restart: RestartPolicy{When: RestartAlways, MaxRestarts: 5, InitialBackoff: ptr(800 * time.Millisecond), MaxBackoff: ptr(800 * time.Millisecond)}}
	if _, err := testMgr.Create(bg(), fence); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the fence tool's restart after its backoff", func() bool {
		in, ok := testMgr.Fetch("slowback-fence")
		return ok && in.Restarts >= 1
	})
	stopAndCheckGone(t, "slowback-fence")
	if left := withMarker(t, marker); len(left) > 0 {
		t.Fatalf("a restart ran after stop: %v", left)
	}
	if testMgr.Running("slowback") {
		t.Fatal("the stopped tool's tag came back")
	}
}

func TestStdinPipeRoundTrip(t *testing.T) {
	spec := Spec{Tag: "cat", Argv: []string{"cat"}, StdinPipe: true, Stdout: Output{Kind: Captured}}
	if _, err := testMgr.Create(bg(), spec); err != nil {
		t.Fatal(err)
	}
	if n, err := testMgr.WriteStdin("cat", []byte("ping\n"), true); err != nil || n != 5 {
		t.Fatalf("write = %d, %v", n, err)
	}
	if in := waitSettled(t, "cat"); in.ExitCode != 0 {
		t.Fatalf("cat did not exit 0 on EOF: %+v", in)
	}
	ch, _ := testMgr.ReadOutput(bg(), "cat", "stdout", 0, 100, 5*time.Second)
	if string(ch.Data) != "ping\n" {
		t.Fatalf("cat echoed %q", ch.Data)
	}
	if _, err := testMgr.WriteStdin("cat", []byte("more"), false); !errors.Is(err, ErrStdinClosed) {
		t.Fatalf("write after eof: %v, want ErrStdinClosed", err)
	}
	stopAndCheckGone(t, "cat")
}

func TestWritingToAToolThatDoesNotReadReturnsWhatFit(t *testing.T) {
	spec := Spec{Tag: "deaf", Argv: []string{"sleep", "30"}, StdinPipe: true}
	if _, err := testMgr.Create(bg(), spec); err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() { n, _ := testMgr.WriteStdin("deaf", make([]byte, 4<<20), false); done <- n }()
	select {
	case n := <-done:
		if n <= 0 || n >= 4<<20 {
			t.Fatalf("written %d of 4 MiB to a tool that does not read; want a partial write", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("write_stdin blocked on a tool that does not read")
	}
	// The pipe is full now: the next write takes nothing, and is no error.
	if n, err := testMgr.WriteStdin("deaf", []byte("more"), false); n != 0 || err != nil {
		t.Fatalf("write to a full pipe = %d, %v; want 0, nil", n, err)
	}
	stopAndCheckGone(t, "deaf")
}

func TestReadinessByOutput(t *testing.T) {
	spec := Spec{Tag: "bus", Argv: []string{"sh", "-c", "sleep 0.2; echo 'ADDRESS=unix:path=/tmp/x'; exec sleep 30"},
		Stdout: Output{Kind: Captured}, Ready: &Readiness{Output: regexp.MustCompile(`^ADDRESS=`), Timeout: ptr(10 * time.Second)}}
	if _, err := testMgr.Create(bg(), spec); err != nil {
		t.Fatal(err)
	}
	ch, _ := testMgr.ReadOutput(bg(), "bus", "stdout", 0, 100, 0)
	if !strings.Contains(string(ch.Data), "ADDRESS=unix") {
		t.Fatalf("create returned before the line was printed: %q", ch.Data)
	}
	stopAndCheckGone(t, "bus")
}

func TestReadinessTimeoutStopsTheToolAndFreesTheTag(t *testing.T) {
	marker := "notready-marker-5521"
	spec := Spec{Tag: "mute", Argv: []string{"sh", "-c", "exec sleep 30", marker},
		Ready: &Readiness{Path: "/nonexistent/ready", Timeout: ptr(200 * time.Millisecond)}}
	_, err := testMgr.Create(bg(), spec)
	if !errors.Is(err, ErrNotReady) {
		t.Fatalf("err = %v, want ErrNotReady", err)
	}
	if testMgr.Running("mute") {
		t.Fatal("tag still in use after a failed readiness")
	}
	if left := withMarker(t, marker); len(left) > 0 {
		t.Fatalf("the unready tool is still running: %v", left)
	}
}

func TestReadinessFailsWhenTheToolExitsFirst(t *testing.T) {
	spec := Spec{Tag: "quitter", Argv: []string{"sh", "-c", "exit 4"}, Stdout: Output{Kind: Captured},
		Ready: &Readiness{Output: regexp.MustCompile("never"), Timeout: ptr(10 * time.Second)}}
	start := time.Now()
	_, err := testMgr.Create(bg(), spec)
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "exit code 4") {
		t.Fatalf("err = %v, want ErrNotReady naming exit code 4", err)
	}
	if time.Since(start) > 9*time.Second {
		t.Fatal("create waited for the readiness timeout although the tool had exited")
	}
}

func TestEventsAreNumberedWithoutGaps(t *testing.T) {
	// The Config's OnEvent in TestMain only counts exits; numbering is the
	// manager's, so check it on the manager's own counter across a life cycle.
	testMgr.evMu.Lock()
	before := testMgr.seq
	testMgr.evMu.Unlock()
	if _, err := testMgr.Create(bg(), Spec{Tag: "ev", Argv: []string{"true"}}); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, "ev")
	testMgr.Stop(bg(), "ev", 0, 0)
	testMgr.evMu.Lock()
	after := testMgr.seq
	testMgr.evMu.Unlock()
	if after-before != 3 { // started, exited, stopped
		t.Fatalf("%d events for started+exited+stopped, want 3", after-before)
	}
}

func TestRestartAfterASIGKILLSignalRunsNormally(t *testing.T) {
	spec := Spec{Tag: "sigkilled", Argv: []string{"sleep", "300"},
		Restart: RestartPolicy{When: RestartAlways, MaxRestarts: 3, InitialBackoff: ptr(20 * time.Millisecond), MaxBackoff: ptr(20 * time.Millisecond)}}
	first, err := testMgr.Create(bg(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := testMgr.Signal("sigkilled", 9); err != nil {
		t.Fatal(err)
	}
	var in Info
	waitUntil(t, "a restart after the SIGKILL", func() bool {
		in, _ = testMgr.Fetch("sigkilled")
		return in.Restarts >= 1 && in.Alive
	})
	// A run killed at birth never gets to exec: seeing it run sleep is the
	// event that proves it was not.
	waitUntil(t, fmt.Sprintf("the restarted run %d to exec sleep", in.Pid), func() bool {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", in.Pid))
		return filepath.Base(exe) == "sleep"
	})
	in, _ = testMgr.Fetch("sigkilled")
	if in.Restarts != 1 || in.Pid == first.Pid || gone(in.Pid) {
		t.Fatalf("after one SIGKILL: %+v; want exactly one restart whose process lives", in)
	}
	stopAndCheckGone(t, "sigkilled")
}
