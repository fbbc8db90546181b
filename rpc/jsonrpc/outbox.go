package jsonrpc

import (
	"bufio"
	"errors"
	"io"
	"sync"
)

// errNotReading reports a frame that was not written because the peer is
// not reading: the output budget is spent and the input has ended (the peer
// closed it without reading what it was owed).
var errNotReading = errors.New("the peer is not reading: output budget spent")

// outbox holds the frames not yet written, at most budget bytes of them, and
// writes them from a goroutine of its own, so that nothing that replies or
// notifies waits on the peer's reading unless that budget is spent. One frame
// is always admitted into an empty outbox, whatever its size.
type outbox struct {
	mu      sync.Mutex
	room    *sync.Cond // signalled when bytes were written or gone set
	frames  [][]byte
	queued  int // bytes queued or being written
	budget  int
	blocked int   // puts waiting for room
	gone    bool  // the input hung up while puts waited: they give up
	broken  error // the output failed, or the outbox was closed: nothing more is queued
	closed  bool
	wake    chan struct{}
	stalled chan struct{} // a put started waiting (see watchHangup)

	w     *bufio.Writer
	frame frameWriter
}

func newOutbox(w io.Writer, frame frameWriter, budget int) *outbox {
	o := &outbox{
		budget: budget, w: bufio.NewWriterSize(w, 64<<10), frame: frame,
		wake: make(chan struct{}, 1), stalled: make(chan struct{}, 1),
	}
	o.room = sync.NewCond(&o.mu)
	go o.writer()
	return o
}

func (o *outbox) fits(n int) bool { return o.queued == 0 || o.queued+n <= o.budget }

// put queues one frame. It blocks while the budget is spent (back pressure
// on a peer that does not read), until room is made, the output fails, or
// the input hangs up.
func (o *outbox) put(body []byte) error {
	o.mu.Lock()
	for !o.fits(len(body)) && o.broken == nil {
		if o.gone {
			o.mu.Unlock()
			return errNotReading
		}
		o.blocked++
		if o.blocked == 1 {
			select {
			case o.stalled <- struct{}{}:
			default:
			}
		}
		o.room.Wait()
		o.blocked--
	}
	if err := o.broken; err != nil {
		o.mu.Unlock()
		return err
	}
	o.frames = append(o.frames, body)
	o.queued += len(body)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return nil
}

// idle reports whether every queued frame has been written (or dropped by a
// failed output).
func (o *outbox) idle() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.queued == 0
}

func (o *outbox) isBlocked() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.blocked > 0
}

// hangUp makes waiting and later over-budget puts give up.
func (o *outbox) hangUp() {
	o.mu.Lock()
	o.gone = true
	o.room.Broadcast()
	o.mu.Unlock()
}

var errClosed = errors.New("the stream is closed")

// close makes the writer end once what is queued has been written.
func (o *outbox) close() {
	o.mu.Lock()
	o.closed = true
	if o.broken == nil {
		o.broken = errClosed
	}
	o.room.Broadcast()
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// writer writes what is queued, a batch at a time, until the outbox is
// closed.
func (o *outbox) writer() {
	for range o.wake {
		o.mu.Lock()
		batch := o.frames
		o.frames = nil
		err := o.broken
		if err == errClosed {
			err = nil // what was queued before the close still goes out
		}
		o.mu.Unlock()
		n := 0
		for _, f := range batch {
			// One write(2) per frame, as before the outbox: a pipe packs
			// small writes into its pages, so a host that stops reading
			// finds its pipe as full as it can be (bigger writes leave
			// holes in the pages).
			if err == nil {
				o.frame(o.w, f)
				err = o.w.Flush()
			}
			n += len(f)
		}
		o.mu.Lock()
		if err != nil && (o.broken == nil || o.broken == errClosed) {
			o.broken = err
		}
		o.queued -= n
		o.room.Broadcast()
		if len(o.frames) > 0 {
			select {
			case o.wake <- struct{}{}:
			default:
			}
		}
		done := o.closed && len(o.frames) == 0
		o.mu.Unlock()
		if done {
			return
		}
	}
}
