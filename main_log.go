package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// logSink is the sidecar's log output when it is stderr. Tools created with
// "inherit" write to the same pipe, and a host that does not drain it would
// make every log line — and so create and stop, which log — block. Lines are
// queued (at most max bytes) and written by a goroutine of their own; when the
// queue is full they are dropped and counted, and the count is written once
// there is room again.
type logSink struct {
	w io.Writer

	mu      sync.Mutex
	lines   [][]byte
	size    int
	max     int
	dropped int
	wake    chan struct{}
	idle    *sync.Cond
	busy    bool
}

func newLogSink(w io.Writer, max int) *logSink {
	l := &logSink{w: w, max: max, wake: make(chan struct{}, 1)}
	l.idle = sync.NewCond(&l.mu)
	go l.run()
	return l
}

// Write queues one record; it never blocks.
func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	if l.size+len(p) > l.max {
		l.dropped++
		l.mu.Unlock()
		return len(p), nil
	}
	l.lines = append(l.lines, append([]byte(nil), p...))
	l.size += len(p)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (l *logSink) run() {
	for range l.wake {
		l.mu.Lock()
		lines, dropped := l.lines, l.dropped
		l.lines, l.dropped, l.busy = nil, 0, true
		l.mu.Unlock()
		n := 0
		for _, b := range lines {
			l.w.Write(b)
			n += len(b)
		}
		if dropped > 0 {
			fmt.Fprintf(l.w, "procmgr: %d log lines dropped: stderr was not drained\n", dropped)
		}
		l.mu.Lock()
		l.size -= n
		l.busy = false
		if len(l.lines) > 0 {
			select {
			case l.wake <- struct{}{}:
			default:
			}
		}
		l.idle.Broadcast()
		l.mu.Unlock()
	}
}

// flush waits up to d for the queued lines to be written.
func (l *logSink) flush(d time.Duration) {
	deadline := time.AfterFunc(d, func() {
		l.mu.Lock()
		l.idle.Broadcast()
		l.mu.Unlock()
	})
	defer deadline.Stop()
	start := time.Now()
	l.mu.Lock()
	for (len(l.lines) > 0 || l.busy) && time.Since(start) < d {
		l.idle.Wait()
	}
	l.mu.Unlock()
}
