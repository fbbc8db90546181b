package manager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// stdinWriteWait bounds one WriteStdin: a tool that does not read its stdin
// fills the pipe, and the caller is told how much was written instead of the
// sidecar blocking.
const stdinWriteWait = 10 * time.Millisecond

// maxReadOutput bounds one ReadOutput reply.
const maxReadOutput = 4 << 20

// ReadOutput returns up to max bytes of a captured stream ("stdout" or
// "stderr") from offset (negative: the oldest byte kept). With wait > 0 it
// first waits that long for output beyond offset (or EOF), without polling.
func (m *Manager) ReadOutput(ctx context.Context, tag, stream string, offset int64, max int, wait time.Duration) (Chunk, error) {
	t, err := m.lookup(tag)
	if err != nil {
		return Chunk{}, err
	}
	c, err := t.captureOf(stream)
	if err != nil {
		return Chunk{}, err
	}
	if max <= 0 || max > maxReadOutput {
		max = maxReadOutput
	}
	if wait > 0 {
		from := offset
		if from < 0 {
			from = c.read(-1, 0).Start
		}
		ctx, cancel := context.WithTimeout(ctx, wait)
		c.wait(ctx, from)
		cancel()
	}
	return c.read(offset, max), nil
}

// WaitOutput waits, up to wait, for output beyond offset or EOF.
func (m *Manager) WaitOutput(ctx context.Context, tag, stream string, offset int64, wait time.Duration) error {
	t, err := m.lookup(tag)
	if err != nil {
		return err
	}
	c, err := t.captureOf(stream)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	c.wait(ctx, offset)
	return nil
}

func (t *tool) captureOf(stream string) (*capture, error) {
	var c *capture
	switch stream {
	case "stdout":
		c = t.stdout
	case "stderr":
		c = t.stderr
		if c == nil && t.spec.Stderr.Kind == ToStdout && t.stdout != nil {
			return nil, fmt.Errorf("%w: stderr of %q goes to its stdout: read stdout", ErrInvalid, t.tag)
		}
	default:
		return nil, fmt.Errorf("%w: stream must be \"stdout\" or \"stderr\"", ErrInvalid)
	}
	if c == nil {
		return nil, fmt.Errorf("%w: %w: %s of %q is not captured (create it with %s: \"capture\")", ErrInvalid, ErrNotCaptured, stream, t.tag, stream)
	}
	return c, nil
}

// WriteStdin writes data to the tool's stdin pipe, waiting at most
// stdinWriteWait for room, and returns how many bytes went in. With eof the
// pipe is then closed, and the tool reads end-of-file.
func (m *Manager) WriteStdin(tag string, data []byte, eof bool) (int, error) {
	t, err := m.lookup(tag)
	if err != nil {
		return 0, err
	}
	t.mu.Lock()
	w := t.stdin
	if eof {
		t.stdin = nil
	}
	t.mu.Unlock()
	if w == nil {
		if !t.spec.StdinPipe {
			return 0, fmt.Errorf("%w: %w: %q was created with stdin \"null\"", ErrInvalid, ErrStdinNotPiped, tag)
		}
		return 0, fmt.Errorf("%w: %w: stdin of %q was closed", ErrInvalid, ErrStdinClosed, tag)
	}
	n := 0
	if len(data) > 0 {
		// First what fits now, without waiting: on a loaded machine the
		// deadline below can pass before this goroutine runs again, and a
		// write past its deadline is not even tried (written 0 to an empty
		// pipe). Then up to stdinWriteWait for room for the rest.
		w.SetWriteDeadline(time.Time{}) // a past one (the last call's) would refuse even this
		n, err = writeNow(w, data)
		if err == nil && n < len(data) {
			w.SetWriteDeadline(time.Now().Add(stdinWriteWait))
			var more int
			more, err = w.Write(data[n:])
			n += more
			if errors.Is(err, os.ErrDeadlineExceeded) {
				err = nil // the pipe is full: n bytes went in
			}
		}
	}
	if eof {
		w.Close()
	}
	if err != nil {
		return n, fmt.Errorf("write stdin of %q: %w", tag, err)
	}
	return n, nil
}

// writeNow makes one non-blocking write of b to the pipe w and returns how
// much went in (0 when the pipe is full).
func writeNow(w *os.File, b []byte) (int, error) {
	rc, err := w.SyscallConn()
	if err != nil {
		return 0, err
	}
	n := 0
	var werr error
	err = rc.Write(func(fd uintptr) bool {
		n, werr = unix.Write(int(fd), b)
		if n < 0 {
			n = 0
		}
		if werr == unix.EAGAIN {
			werr = nil
		}
		return true // never wait here
	})
	if err != nil {
		return n, err
	}
	return n, werr
}
