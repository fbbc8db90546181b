package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// stuckWriter blocks every Write until released, like a full pipe nobody
// drains.
type stuckWriter struct {
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (w *stuckWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func TestLogLinesNeverWaitOnAStuckStderr(t *testing.T) {
	w := &stuckWriter{release: make(chan struct{})}
	l := newLogSink(w, 1000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100; i++ { // 100 lines of 100 bytes: 10 times the room
			l.Write([]byte(strings.Repeat("x", 99) + "\n"))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a log line waited on a stderr nobody drains")
	}
	close(w.release)
	l.flush(10 * time.Second)
	w.mu.Lock()
	out := w.buf.String()
	w.mu.Unlock()
	lines := strings.Count(out, strings.Repeat("x", 99)+"\n")
	if lines == 0 || lines > 11 || !strings.Contains(out, "log lines dropped") {
		t.Fatalf("%d lines written (want 1..11, the room plus the one being written) and a count of the dropped:\n%s", lines, out)
	}
}
