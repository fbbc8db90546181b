package manager

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// NotReadyError is how a create's readiness wait failed, with what the tool
// left to tell why. errors.Is(err, ErrNotReady) holds for it.
type NotReadyError struct {
	Tag string
	// Detail says why in words, for people: "not ready within 4s",
	// "exited before it was ready (exit code 1)", ... Code branches on
	// Exited and Stopped instead (the protocol's reason word is made of them).
	Detail string
	// Exited: the main process exited on its own before it was ready; Exit
	// is how.
	Exited bool
	Exit   Exit
	// Stopped: a stop of the tag ended the wait.
	Stopped bool
	// Captured: stdout or stderr is captured. OutputTail is the end of what
	// was captured (the last outputTailLines lines, at most outputTailBytes
	// of each stream), "" when the tool wrote nothing there.
	Captured   bool
	OutputTail string
}

// Bounds of NotReadyError.OutputTail, per captured stream.
const (
	outputTailLines = 20
	outputTailBytes = 4096
)

func (e *NotReadyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: %q %s", ErrNotReady, e.Tag, e.Detail)
	switch {
	case !e.Captured:
		b.WriteString("; its output is not captured (capture stdout or stderr to see it here)")
	case e.OutputTail == "":
		b.WriteString("; it wrote nothing to its captured output: a program whose stdout is a pipe" +
			" may hold its output in a block buffer (run python with -u or PYTHONUNBUFFERED=1," +
			" or wrap the command in stdbuf -oL)")
	default:
		b.WriteString("; last output:\n")
		b.WriteString(e.OutputTail)
	}
	return b.String()
}

func (e *NotReadyError) Unwrap() error { return ErrNotReady }

// addOutput fills the captured-output fields from the tool's captures.
func (e *NotReadyError) addOutput(t *tool) {
	var parts []string
	for _, c := range []*capture{t.stdout, t.stderr} {
		if c == nil {
			continue
		}
		e.Captured = true
		if s := c.tail(outputTailLines, outputTailBytes); s != "" {
			if c == t.stderr && t.stdout != nil {
				s = "[stderr]\n" + s
			}
			parts = append(parts, s)
		}
	}
	e.OutputTail = strings.Join(parts, "\n")
}

// tail returns the last lines of what the stream carried, at most maxBytes,
// as valid UTF-8 without a trailing newline.
func (c *capture) tail(lines, maxBytes int) string {
	c.mu.Lock()
	ch := c.readLocked(c.end-int64(maxBytes), maxBytes)
	c.mu.Unlock()
	data := bytes.TrimRight(ch.Data, "\n")
	for i, n := len(data)-1, 0; i >= 0; i-- {
		if data[i] == '\n' {
			if n++; n == lines {
				data = data[i+1:]
				break
			}
		}
	}
	return strings.ToValidUTF8(string(data), "\uFFFD")
}

// awaitReady waits until the tool's readiness condition holds, the run exits,
// the readiness timeout passes (0: the condition is checked once), a stop
// of the tool begins, or ctx ends. Its error is a *NotReadyError.
func (m *Manager) awaitReady(ctx context.Context, t *tool, r *run) error {
	rd := t.spec.Ready
	timeout := orDefault(rd.Timeout, defaultReadyTimeout)
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	check := m.readyCheck(t, r)
	for {
		if check() {
			return nil
		}
		var changed <-chan struct{}
		if t.stdout != nil {
			changed = t.stdout.changedChan()
		}
		timer := time.NewTimer(readyPoll)
		select {
		case <-r.exited:
			timer.Stop()
			if check() { // it may have printed the line and then exited
				return nil
			}
			in := t.info()
			return &NotReadyError{Tag: t.tag, Detail: fmt.Sprintf("exited before it was ready (%s)", describeExit(in)),
				Exited: true, Exit: Exit{Pid: in.Pid, Code: in.ExitCode, Signal: in.Signal, At: in.ExitedAt}}
		case <-t.stopBegun:
			timer.Stop()
			return &NotReadyError{Tag: t.tag, Detail: "was stopped while waiting for readiness", Stopped: true}
		case <-ctx.Done():
			timer.Stop()
			if check() { // a zero timeout: the one check is the one above
				return nil
			}
			detail := fmt.Sprintf("not ready within %v", timeout)
			if rd.TCP != "" {
				detail += m.tcpNotReadyDetail(t, r)
			}
			return &NotReadyError{Tag: t.tag, Detail: detail}
		case <-changed:
		case <-timer.C:
		}
		timer.Stop()
	}
}

func describeExit(in Info) string {
	if in.Signal != 0 {
		return "killed by " + SignalName(in.Signal)
	}
	return fmt.Sprintf("exit code %d", in.ExitCode)
}

// readyCheck returns the probe for the tool's condition.
func (m *Manager) readyCheck(t *tool, r *run) func() bool {
	rd := t.spec.Ready
	switch {
	case rd.Output != nil:
		var scanners []*lineScanner
		for _, c := range []*capture{t.stdout, t.stderr} {
			if c != nil {
				scanners = append(scanners, &lineScanner{c: c})
			}
		}
		return func() bool {
			for _, s := range scanners {
				if s.match(rd.Output.Match) {
					return true
				}
			}
			return false
		}
	case rd.Path != "":
		path := rd.Path
		if !filepath.IsAbs(path) && t.spec.Dir != "" {
			path = filepath.Join(t.spec.Dir, path)
		}
		return func() bool { _, err := os.Stat(path); return err == nil }
	default:
		port := tcpPort(rd.TCP)
		return func() bool {
			// The port must be listened on by the tool's own tree: a server
			// still holding it from an earlier session does not count.
			if owned, known := m.listensOn(t, r, port); known && !owned {
				return false
			}
			conn, err := net.DialTimeout("tcp", rd.TCP, 200*time.Millisecond)
			if err != nil {
				return false
			}
			conn.Close()
			return true
		}
	}
}

// tcpPort is the port of host:port, or -1.
func tcpPort(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return -1
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		if port, err = net.LookupPort("tcp", p); err != nil {
			return -1
		}
	}
	return port
}

// listensOn reports whether a process of the run's tree holds a listening
// TCP socket on port. known is false where the OS does not tell (macOS):
// readiness then rests on the connection alone.
func (m *Manager) listensOn(t *tool, r *run, port int) (owned, known bool) {
	inodes, known := listeningInodes(port)
	if !known || len(inodes) == 0 {
		return false, known
	}
	// membersOf holds the main process while it lives (the group leader, or
	// a followed daemon): a pid of its own could be a reaped one's reuse.
	for _, e := range m.membersOf(t, r) {
		if holdsSocket(e.pid, inodes) {
			return true, true
		}
	}
	return false, true
}

// tcpNotReadyDetail names who holds the port when it is not the tool.
func (m *Manager) tcpNotReadyDetail(t *tool, r *run) string {
	port := tcpPort(t.spec.Ready.TCP)
	inodes, known := listeningInodes(port)
	if !known {
		return ""
	}
	if len(inodes) == 0 {
		return fmt.Sprintf(": nothing listens on port %d", port)
	}
	if owned, _ := m.listensOn(t, r, port); owned {
		return ""
	}
	if pid, name, ok := socketHolder(inodes); ok {
		return fmt.Sprintf(": port %d is held by pid %d (%s), not by this tool", port, pid, name)
	}
	return fmt.Sprintf(": port %d is held by another process, not by this tool", port)
}

// lineScanner matches whole lines of a capture, each once, plus the line
// still being written (a prompt without a newline).
type lineScanner struct {
	c   *capture
	pos int64 // offset of the first line not yet complete
}

func (s *lineScanner) match(matches func([]byte) bool) bool {
	ch := s.c.read(s.pos, len(s.c.buf))
	data := ch.Data
	last := bytes.LastIndexByte(data, '\n')
	complete, tail := data[:last+1], data[last+1:]
	for len(complete) > 0 {
		i := bytes.IndexByte(complete, '\n')
		if matches(bytes.TrimRight(complete[:i], "\r")) {
			return true
		}
		complete = complete[i+1:]
	}
	s.pos = ch.Start + int64(last+1)
	return len(tail) > 0 && matches(tail)
}
