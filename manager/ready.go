package manager

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// awaitReady waits until the tool's readiness condition holds, the run exits,
// the readiness timeout passes, or ctx ends.
func (m *Manager) awaitReady(ctx context.Context, t *tool, r *run) error {
	rd := t.spec.Ready
	timeout := rd.Timeout
	if timeout <= 0 {
		timeout = DefaultReadyTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	check := readyCheck(t)
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
			return fmt.Errorf("exited before it was ready (%s)", describeExit(in))
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("not ready within %v", timeout)
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
func readyCheck(t *tool) func() bool {
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
		return func() bool {
			conn, err := net.DialTimeout("tcp", rd.TCP, 200*time.Millisecond)
			if err != nil {
				return false
			}
			conn.Close()
			return true
		}
	}
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
