package manager

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
)

// defaultCaptureSize is the ring size of a captured stream when the create
// names none.
const defaultCaptureSize = 1 << 20

// Capture says how a captured stream is kept: a ring of Size bytes, and
// optionally a file rotated when it reaches FileMaxBytes, keeping FileBackups
// older files (path.1 … path.N).
type Capture struct {
	Size         int
	File         string
	FileMaxBytes int64
	FileBackups  int
}

// capture keeps the most recent output of one stream of a tool, across its
// restarts. Offsets are absolute: byte n is the n-th byte the stream ever
// carried, so a reader can tell exactly what it missed when the ring wrapped.
type capture struct {
	mu      sync.Mutex
	buf     []byte
	start   int64 // offset of the oldest byte kept
	end     int64 // offset after the newest byte
	eof     bool  // the current run's pipe is closed
	changed chan struct{}
	file    *rotatingFile
}

func newCapture(c Capture) (*capture, error) {
	size := c.Size
	if size <= 0 {
		size = defaultCaptureSize
	}
	cp := &capture{buf: make([]byte, size), changed: make(chan struct{})}
	if c.File != "" {
		f, err := openRotating(c.File, c.FileMaxBytes, c.FileBackups)
		if err != nil {
			return nil, err
		}
		cp.file = f
	}
	return cp, nil
}

// pump copies a run's pipe into the capture until every writer has closed
// it. It reads continuously, so a tool never blocks on a full pipe: when the
// reader falls behind the ring simply forgets the oldest bytes.
func (c *capture) pump(r *os.File) {
	defer r.Close()
	buf := make([]byte, 64*1024)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			c.write(buf[:n])
		}
		if err != nil {
			break
		}
	}
	c.mu.Lock()
	c.eof = true
	c.broadcastLocked()
	c.mu.Unlock()
}

// reopen marks the start of a new run's output (a restart).
func (c *capture) reopen() {
	c.mu.Lock()
	c.eof = false
	c.broadcastLocked()
	c.mu.Unlock()
}

func (c *capture) write(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.file != nil {
		c.file.write(p)
	}
	size := int64(len(c.buf))
	if int64(len(p)) > size {
		c.end += int64(len(p)) - size
		p = p[len(p)-int(size):]
	}
	for len(p) > 0 {
		i := int(c.end % size)
		n := copy(c.buf[i:], p)
		p = p[n:]
		c.end += int64(n)
	}
	if c.end-c.start > size {
		c.start = c.end - size
	}
	c.broadcastLocked()
}

func (c *capture) broadcastLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Chunk is a piece of captured output.
type Chunk struct {
	Data     []byte
	Start    int64 // offset of Data[0]
	Overflow bool  // bytes between the requested offset and Start were lost
	EOF      bool  // nothing follows Data until a restart
}

// read returns up to max bytes from offset (negative: from the oldest kept).
func (c *capture) read(offset int64, max int) Chunk {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readLocked(offset, max)
}

func (c *capture) readLocked(offset int64, max int) Chunk {
	var ch Chunk
	if offset < 0 {
		offset = c.start
	}
	if offset < c.start {
		ch.Overflow = true
		offset = c.start
	}
	if offset > c.end {
		offset = c.end
	}
	n := c.end - offset
	if n > int64(max) {
		n = int64(max)
	}
	ch.Start = offset
	ch.Data = make([]byte, n)
	size := int64(len(c.buf))
	for done := int64(0); done < n; {
		i := (offset + done) % size
		done += int64(copy(ch.Data[done:], c.buf[i:min(size, i+n-done)]))
	}
	ch.EOF = c.eof && offset+n == c.end
	return ch
}

// wait blocks until output beyond offset exists, the stream is at EOF, or
// ctx ends.
func (c *capture) wait(ctx context.Context, offset int64) {
	c.waitFor(ctx, func() bool { return c.end > offset || c.eof })
}

// waitEOF waits until the current run's pipe is drained and closed.
func (c *capture) waitEOF(ctx context.Context) {
	c.waitFor(ctx, func() bool { return c.eof })
}

// waitFor blocks until cond (called with mu held) holds or ctx ends. Every
// change broadcasts by closing c.changed, so a reader of the output waits
// without polling (awaitReady selects on it too, beside the readyPoll timer
// it needs for the conditions no output announces).
func (c *capture) waitFor(ctx context.Context, cond func() bool) {
	for {
		c.mu.Lock()
		if cond() {
			c.mu.Unlock()
			return
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

func (c *capture) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.file != nil {
		c.file.close()
		c.file = nil
	}
}

// rotatingFile appends to path and, past maxBytes, shifts path to path.1,
// path.1 to path.2 … keeping backups old files.
type rotatingFile struct {
	path     string
	maxBytes int64
	backups  int
	f        *os.File
	size     int64
	failed   bool
}

func openRotating(path string, maxBytes int64, backups int) (*rotatingFile, error) {
	if maxBytes <= 0 {
		maxBytes = 10 << 20
	}
	if backups < 0 {
		backups = 0
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("capture file %s: %v", path, unwrapPathErr(err))
	}
	st, _ := f.Stat()
	return &rotatingFile{path: path, maxBytes: maxBytes, backups: backups, f: f, size: st.Size()}, nil
}

// write is called from the pump only. A failing file (disk full) is given up
// on rather than allowed to stall the pump: the ring still has the output.
func (r *rotatingFile) write(p []byte) {
	if r.failed {
		return
	}
	if r.size+int64(len(p)) > r.maxBytes && r.size > 0 {
		r.rotate()
	}
	n, err := r.f.Write(p)
	r.size += int64(n)
	if err != nil {
		r.failed = true
	}
}

func (r *rotatingFile) rotate() {
	r.f.Close()
	if r.backups == 0 {
		os.Remove(r.path)
	}
	for i := r.backups; i >= 1; i-- {
		from := r.path
		if i > 1 {
			from = r.path + "." + strconv.Itoa(i-1)
		}
		os.Rename(from, r.path+"."+strconv.Itoa(i))
	}
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		r.failed = true
		r.f = nil
		return
	}
	r.f, r.size = f, 0
}

func (r *rotatingFile) close() {
	if r.f != nil {
		r.f.Close()
	}
}

// changedChan is closed at the next change (see waitFor).
func (c *capture) changedChan() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}
