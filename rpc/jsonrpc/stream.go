package jsonrpc

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/sourcegraph/jsonrpc2"
)

// DefaultBudget is how many bytes of replies and notifications not yet
// written (plus the request bytes held by calls in progress, see Server) the
// sidecar keeps for a peer that does not read.
const DefaultBudget = 64 << 20

// StreamConfig configures a Stream.
type StreamConfig struct {
	Framing Framing
	// MaxMessage bounds an incoming frame's body in bytes (a line's
	// terminator is not counted); a longer one is answered and skipped.
	MaxMessage int
	// Budget bounds the bytes waiting to be written (DefaultBudget if 0).
	Budget int
	Log    *slog.Logger
}

// Stream is the jsonrpc2.ObjectStream the sidecar serves through. It covers
// what jsonrpc2's own streams lack:
//
//   - Bad input never ends the connection. jsonrpc2's Conn closes on any
//     frame it cannot decode; Stream answers every bad frame itself (-32700,
//     -32600, -32602, id null when it cannot be read) and hands Conn only
//     requests that checkRequest passed. Responses from the peer are dropped.
//   - Frames are bounded: an over-long one is answered as soon as its size
//     is known and skipped without being held whole.
//   - Writing never waits on the peer while less than Budget bytes are
//     unwritten: frames go to an outbox written by a goroutine of its own.
//     jsonrpc2 writes under one lock on the goroutine that replies, which is
//     also its reading goroutine for replies sent from a plain Handler.
//   - The end of the input does not close the Conn: jsonrpc2 refuses to send
//     on a closed Conn, but replies to calls in progress and notifications
//     are still owed. ReadObject reports the end through Ended and waits for
//     Close instead of returning it.
//   - When writes wait because the budget is spent, the input is watched for
//     a hang-up (the peer closed it), which ends it even though the reader,
//     held up behind the write, has not reached EOF.
type Stream struct {
	in  frameReader
	max int
	log *slog.Logger
	out *outbox
	fd  int // the input's descriptor, -1 when it cannot be polled

	ended     chan struct{}
	endOnce   sync.Once
	closed    chan struct{}
	closeOnce sync.Once
}

// NewStream reads frames from r and writes frames to w.
func NewStream(r io.Reader, w io.Writer, c StreamConfig) (*Stream, error) {
	if c.Budget <= 0 {
		c.Budget = DefaultBudget
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Stream{max: c.MaxMessage, log: c.Log, fd: -1,
		ended: make(chan struct{}), closed: make(chan struct{})}
	br := bufio.NewReaderSize(r, 64<<10)
	var fw frameWriter
	switch c.Framing {
	case FramingLine, "":
		s.in, fw = &lineReader{r: br, max: c.MaxMessage}, writeLine
	case FramingHeader:
		s.in, fw = &headerReader{r: br, max: c.MaxMessage}, writeHeader
	default:
		return nil, fmt.Errorf("unknown framing %q (want %q or %q)", c.Framing, FramingLine, FramingHeader)
	}
	s.out = newOutbox(w, fw, c.Budget)
	s.fd = pollableFd(r)
	if s.fd >= 0 {
		go s.watchHangup()
	}
	return s, nil
}

// ReadObject implements jsonrpc2.ObjectStream. It returns only a request
// that checkRequest passed, decoded into v. When the input ends it reports
// it through Ended and returns only once Close was called.
func (s *Stream) ReadObject(v any) error {
	for {
		select {
		case <-s.ended: // a hang-up was seen while the reader was held up
			<-s.closed
			return io.EOF
		default:
		}
		frame, err := s.in.next()
		if err != nil {
			switch e := err.(type) {
			case errTooLarge:
				s.log.Warn("skipping an over-long message", "max_bytes", s.max, "bytes", e.size)
				msg := fmt.Sprintf("message larger than the %d-byte limit (--max-message) was skipped", s.max)
				if e.size >= 0 {
					msg = fmt.Sprintf("message of %d bytes is larger than the %d-byte limit (--max-message); skipped", e.size, s.max)
				}
				s.writeError(nil, Errorf(CodeInvalidRequest, "%s", msg))
				continue
			case errBadHeader:
				s.writeError(nil, Errorf(CodeParseError, "parse error: %s", e.reason))
				continue
			}
			if err != io.EOF {
				s.log.Warn("input failed", "err", err)
			}
			s.end()
			<-s.closed
			return err
		}
		if perr := checkRequest(frame); perr != nil {
			if perr.code == 0 {
				s.log.Warn("dropped a message", "reason", perr.msg)
			} else {
				s.writeError(perr.id, &Error{Code: perr.code, Message: perr.msg})
			}
			continue
		}
		if err := json.Unmarshal(frame, v); err != nil { // checkRequest should have caught it
			s.writeError(nil, Errorf(CodeInvalidRequest, "invalid request: %v", err))
			continue
		}
		return nil
	}
}

// WriteObject implements jsonrpc2.ObjectStream. It queues the frame and
// returns; it waits only while Budget bytes are unwritten.
func (s *Stream) WriteObject(obj any) error {
	body, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	return s.out.put(body)
}

// Close implements jsonrpc2.ObjectStream; jsonrpc2 calls it when its Conn is
// closed (Server.Close). It lets ReadObject return and ends the writer once
// the frames already queued are written; nothing is queued after it. The
// input and the output themselves are the caller's to close.
func (s *Stream) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.out.close()
	})
	return nil
}

// Ended is closed when the input has ended: EOF, a read error, or a hang-up
// seen while writes waited for the peer to read.
func (s *Stream) Ended() <-chan struct{} { return s.ended }

func (s *Stream) end() { s.endOnce.Do(func() { close(s.ended) }) }

// Idle reports whether every frame queued so far has been written.
func (s *Stream) Idle() bool { return s.out.idle() }

func (s *Stream) writeError(id *jsonrpc2.ID, e *Error) {
	if err := s.out.put(errorResponse(id, e)); err != nil {
		s.log.Debug("error reply not sent", "err", err)
	}
}

// watchHangup polls the input for a hang-up while some write waits for room,
// and then ends the input: the peer closed it, so the session must end even
// though the reader is held up behind a write and has not reached EOF.
func (s *Stream) watchHangup() {
	for {
		select {
		case <-s.out.stalled:
		case <-s.ended:
			return
		case <-s.closed:
			return
		}
		for s.out.isBlocked() {
			if hungUp(s.fd, 100*time.Millisecond) {
				s.log.Warn("the peer closed its output without reading ours; ending the input")
				s.end()
				s.out.hangUp()
				return
			}
		}
	}
}
