package tests

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"procmgr/clients/go"
)

// End-to-end checks of the findings of the adversarial probe of the
// transport (issue 9). rpc/jsonrpc/transport_test.go covers each one in process.

// Whatever the host does with stdout, closing stdin ends the session: here
// the host sends thousands of calls, never reads a reply, and closes stdin.
func TestClosingStdinEndsTheSessionWhileStdoutIsUnread(t *testing.T) {
	t.Parallel()
	sc := startRawSidecar(t)
	fmt.Fprintf(sc.in, `{"jsonrpc":"2.0","id":0,"method":"create","params":{"tag":"t","argv":["/bin/sleep","1000"]}}`+"\n")
	br := bufio.NewReader(sc.out)
	pid := 0
	for pid == 0 { // read up to the create's reply, then never again
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the create reply: %v", err)
		}
		if strings.Contains(line, `"id":0`) {
			var info struct {
				Result client.ProcessInfo `json:"result"`
			}
			if err := json.Unmarshal([]byte(line), &info); err != nil || info.Result.Pid == 0 {
				t.Fatalf("create: %s", line)
			}
			pid = info.Result.Pid
		}
	}
	var b strings.Builder
	for i := 1; i <= 1000; i++ {
		fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":%d,"method":"hello"}`+"\n", i)
	}
	for i := 1001; i <= 3764; i++ {
		fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":%d,"method":"running","params":{"tag":"t"}}`+"\n", i)
	}
	wrote := make(chan error, 1)
	go func() { _, err := sc.in.WriteString(b.String()); wrote <- err }()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatalf("writing the calls: %v", err)
		}
	case <-time.After(callTimeout):
		t.Fatal("the sidecar stopped reading its stdin while its stdout was unread")
	}
	sc.in.Close()
	select {
	case <-sc.waited:
	case <-time.After(callTimeout):
		t.Fatalf("the sidecar did not exit within %v of its stdin closing, with its stdout unread", callTimeout)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("the tool (pid %d) outlived the session: kill(pid, 0) = %v", pid, err)
	}
}

// The sidecar's log lines share stderr with "inherit" tools; a host that
// never drains that pipe must not stop the sidecar from replying. The test
// first sees (in /proc) the tool blocked writing to that full pipe, and
// sees it still blocked, having written no more, after the sidecar's 100
// logged creates and stops: the pipe was full all along.
func TestUndrainedStderrNeverBlocksTheSidecar(t *testing.T) {
	t.Parallel()
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer errR.Close() // never read: the pipe fills
	pipe, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", errR.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	sc := startSidecarOpts(t, client.Options{Stderr: errW})
	errW.Close()
	// The tool writes far more than a pipe holds (64 KiB by default).
	const size = 1 << 20
	filler := sc.create(client.CreateParams{Tag: "filler", Argv: sh(fmt.Sprintf("exec head -c %d /dev/zero >&2", size)),
		Stderr: client.OutputInherit})
	written := awaitBlockedWrite(t, filler.Pid, pipe, size, errR)
	// Every create and stop logs a line; none may wait on the full pipe.
	for i := 0; i < 50; i++ {
		tag := "t" + strconv.Itoa(i)
		sc.create(client.CreateParams{Tag: tag, Argv: []string{"/bin/true"}})
		if _, err := sc.Stop(ctxT(t), client.StopParams{Tag: tag}); err != nil {
			t.Fatalf("stop %s with stderr full: %v", tag, err)
		}
	}
	if again, blocked := blockedWrite(filler.Pid, pipe); !blocked || again != written {
		t.Fatalf("the pipe did not stay full: the tool wrote %d bytes, then %d (blocked in a write to it now: %v)", written, again, blocked)
	}
	if _, err := sc.Stop(ctxT(t), client.StopParams{Tag: "filler", Signal: "SIGKILL"}); err != nil {
		t.Fatal(err)
	}
}

// awaitBlockedWrite waits until pid is blocked in a write(2) to fd 1, which
// is pipe (a /proc fd link, "pipe:[inode]"), having written less than size
// bytes in all, and the pipe, whose read end is r, holds at least half its
// capacity: the pipe is full (a write that only sleeps a moment, say for a
// page, would be seen with the pipe nearly empty). It returns what pid had
// written.
func awaitBlockedWrite(t *testing.T, pid int, pipe string, size int64, r *os.File) int64 {
	t.Helper()
	end := time.Now().Add(20 * time.Second)
	for {
		written, blocked := blockedWrite(pid, pipe)
		held, capacity := pipeFill(t, r)
		if blocked && written < size && held >= capacity/2 {
			return written
		}
		if time.Now().After(end) {
			sys, _ := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
			t.Fatalf("waited 20s for tool %d to block writing its %d bytes to the full pipe on its fd 1: wrote %d, pipe holds %d of %d, syscall %q: %s",
				pid, size, written, held, capacity, strings.TrimSpace(string(sys)), describe(pid))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pipeFill is what the kernel says of the pipe whose read end is r: the
// bytes it holds (FIONREAD) and its capacity (F_GETPIPE_SZ).
func pipeFill(t *testing.T, r *os.File) (held, capacity int) {
	t.Helper()
	held, err := unix.IoctlGetInt(int(r.Fd()), unix.TIOCINQ) // FIONREAD
	if err != nil {
		t.Fatalf("FIONREAD: %v", err)
	}
	capacity, err = unix.FcntlInt(r.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatalf("F_GETPIPE_SZ: %v", err)
	}
	return held, capacity
}

// blockedWrite reads /proc: the bytes pid has written (io's wchar), and
// whether it now sleeps in a write(2) to fd 1 and fd 1 is pipe (head
// writes to stdout, which the tool's shell made its stderr).
func blockedWrite(pid int, pipe string) (written int64, blocked bool) {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "wchar: "); ok {
				written, _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	st, err := readStat(pid)
	sys, err2 := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
	fd1, err3 := os.Readlink(fmt.Sprintf("/proc/%d/fd/1", pid))
	if err != nil || err2 != nil || err3 != nil || st.State != 'S' || fd1 != pipe {
		return written, false
	}
	// "<number> <arg0> ...", or "running" while on a CPU.
	f := strings.Fields(string(sys))
	return written, len(f) > 1 && f[0] == strconv.Itoa(syscall.SYS_WRITE) && f[1] == "0x1"
}

// Long waits never take the room that stop, signal and lookups need.
func TestPendingWaitsNeverStarveStop(t *testing.T) {
	t.Parallel()
	r := startRaw(t, false)
	r.mustResult(1, "create", map[string]any{"tag": "w", "argv": []string{"/bin/sleep", "1000"}}, nil)
	var b strings.Builder
	const waits = 4096
	for i := 0; i < waits; i++ {
		fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":"w%d","method":"wait","params":{"tag":"w"}}`+"\n", i)
	}
	fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":"over","method":"wait","params":{"tag":"w"}}`+"\n")
	start := time.Now()
	r.sendWait([]byte(b.String()))
	t.Logf("sent in %v", time.Since(start))
	if m := r.until(`"over"`); m.Error == nil || m.Error.Code != -32000 || m.Error.Reason() != client.ReasonServerBusy {
		t.Fatalf("wait past the bound: %s, want -32000 with reason %q", m, client.ReasonServerBusy)
	}
	if m := r.call(2, "running", map[string]any{"tag": "w"}); string(m.Result) != "true" {
		t.Fatalf("running with %d waits pending: %s", waits, m)
	}
	if m := r.call(3, "signal", map[string]any{"tag": "w", "signal": "SIGCONT"}); m.Error != nil {
		t.Fatalf("signal with %d waits pending: %s", waits, m)
	}
	t.Logf("over and lookups at %v", time.Since(start))
	if m := r.call(4, "stop", map[string]any{"tag": "w"}); m.Error != nil {
		t.Fatalf("stop with %d waits pending: %s", waits, m)
	}
	t.Logf("stop at %v", time.Since(start))
	seen := map[string]bool{}
	for len(seen) < waits {
		m := r.take(func(m rawMsg) bool { return m.Method == "" })
		if m.Error != nil || !strings.HasPrefix(string(m.ID), `"w`) || seen[string(m.ID)] {
			t.Fatalf("reply %s, want one to a pending wait, once", m)
		}
		seen[string(m.ID)] = true
	}
	t.Logf("every wait answered at %v", time.Since(start))
}

// A Content-Length over --max-message is answered before its body is sent.
func TestHugeContentLengthIsAnsweredAtOnce(t *testing.T) {
	t.Parallel()
	r := startRaw(t, true)
	r.sendWait([]byte("Content-Length: 1000000000000\r\n\r\n"))
	m := r.next()
	if m.Error == nil || m.Error.Code != -32600 || string(m.ID) != "null" {
		t.Fatalf("reply to a 1e12-byte Content-Length: %s", m)
	}
}

// Names are case-sensitive, ids with invalid UTF-8 are refused (every byte
// written is UTF-8), and --max-message is exact.
func TestWireStrictness(t *testing.T) {
	t.Parallel()
	r := startRaw(t, false, "--max-message", "1024")
	r.sendWait([]byte(`{"JSONRPC":"2.0","ID":7,"METHOD":"fetch","PARAMS":{"TAG":"x"}}` + "\n"))
	if m := r.next(); m.Error == nil || m.Error.Code != -32600 {
		t.Fatalf("upper-case member names: %s", m)
	}
	r.sendWait([]byte(`{"jsonrpc":"2.0","id":8,"method":"fetch","params":{"TAG":"x"}}` + "\n"))
	if m := r.until("8"); m.Error == nil || m.Error.Code != -32602 || !strings.Contains(m.Error.Message, `"TAG"`) {
		t.Fatalf("upper-case field name: %s", m)
	}
	r.sendWait([]byte("{\"jsonrpc\":\"2.0\",\"id\":\"a\xffb\",\"method\":\"hello\"}\n"))
	if m := r.next(); m.Error == nil || m.Error.Code != -32700 || !utf8.Valid(m.raw) {
		t.Fatalf("an id with invalid UTF-8: %q", m.raw)
	}
	req := func(n int) string {
		head, tail := `{"jsonrpc":"2.0","id":9,"method":"fetch","params":{"tag":"`, `"}}`
		return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
	}
	r.sendWait([]byte(req(1025) + "\n"))
	if m := r.next(); m.Error == nil || m.Error.Code != -32600 || string(m.ID) != "null" {
		t.Fatalf("a 1025-byte line with --max-message 1024: %s", m)
	}
	r.sendWait([]byte(req(1024) + "\n"))
	if m := r.until("9"); m.Error != nil {
		t.Fatalf("a 1024-byte line with --max-message 1024: %s", m)
	}
}
