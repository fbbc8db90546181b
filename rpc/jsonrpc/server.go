package jsonrpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sourcegraph/jsonrpc2"
)

// Limits of a Server. Each bounds what a peer can make the sidecar hold;
// past one, a call is refused at once (CodeServerBusy) rather than queued, so
// the reader never stops for it.
const (
	// MaxConcurrentCalls bounds calls in progress that are neither lookups
	// nor long waits (stop, signal, shutdown, create without readiness...).
	MaxConcurrentCalls = 4096
	// MaxWaitingCalls bounds long waits in progress (calls whose params
	// report WaitsLong). They have a bound of their own, so that any number
	// of them never takes the room that stop, signal and shutdown need;
	// lookups are never refused.
	MaxWaitingCalls = 4096
)

// LongWaiter is implemented by the params of a method whose call may wait
// long (on a tool's exit, for output, for readiness): such a call counts
// against MaxWaitingCalls instead of MaxConcurrentCalls.
type LongWaiter interface {
	WaitsLong() bool
}

// Lookup is implemented by the params of a method registered with Handle
// that, for some params, answers at once from memory: when IsLookup reports
// true, the call is served on the reading goroutine, in order, as a
// HandleInline method is.
type Lookup interface {
	IsLookup() bool
}

// prepared is a call whose params are decoded, ready to run.
type prepared struct {
	run    func(context.Context) (any, error)
	waits  bool
	inline bool // a Lookup that says so
	// admit, if set, runs on the reading goroutine before the call is
	// admitted; its error is the reply, and the undo it returns runs
	// instead of run when the call is then refused.
	admit func() (undo func(), err error)
}

type method struct {
	prepare func(raw json.RawMessage) (prepared, *Error)
	// inline methods answer at once without blocking: they are served on
	// jsonrpc2's reading goroutine, in the order of the input.
	inline bool
}

// Server dispatches JSON-RPC requests, read by a jsonrpc2.Conn, to
// registered methods. It adds what jsonrpc2's Handler leaves to its user:
// typed methods with strict params, recovered panics, bounds on calls in
// progress and on the bytes they hold, lookups in order on the reading
// goroutine beside blocking calls on goroutines of their own, and
// notifications that never block the code emitting them.
type Server struct {
	log      *slog.Logger
	methods  map[string]method
	calls    chan struct{}
	waits    chan struct{}
	budget   int64
	held     atomic.Int64 // request bytes of calls in progress
	inflight atomic.Int64 // calls being served off the reading goroutine

	nmu       sync.Mutex
	notes     []note
	noteBytes int
	nwake     chan struct{}
	dropped   int64

	conn    *jsonrpc2.Conn
	started chan struct{}
}

type note struct {
	method string
	params json.RawMessage
}

// NewServer returns a Server with no methods. budget bounds the request bytes
// held by calls in progress, and separately the notifications waiting to be
// handed to the stream (DefaultBudget if 0).
func NewServer(log *slog.Logger, budget int) *Server {
	if budget <= 0 {
		budget = DefaultBudget
	}
	return &Server{
		log:     log,
		methods: make(map[string]method),
		calls:   make(chan struct{}, MaxConcurrentCalls),
		waits:   make(chan struct{}, MaxWaitingCalls),
		budget:  int64(budget),
		nwake:   make(chan struct{}, 1),
		started: make(chan struct{}),
	}
}

// Handle registers f as method name, served on a goroutine of its own.
// Params are decoded strictly into P on the reading goroutine (so the raw
// request is not held while f runs): an unknown field, a field named in
// another letter case or a wrong type is a -32602 naming the field; absent
// or null params decode as {}. f's result is encoded as the reply; an *Error
// it returns is sent as is, any other error as -32603. If P implements
// LongWaiter, the call counts against MaxWaitingCalls when it says so; if
// it implements Lookup, the call is served inline when it says so.
func Handle[P, R any](s *Server, name string, f func(context.Context, P) (R, error)) {
	s.methods[name] = method{prepare: typed(f)}
}

// HandleInline is Handle for a method that answers at once and never blocks
// (a lookup): it runs on the reading goroutine, in order with the input.
func HandleInline[P, R any](s *Server, name string, f func(context.Context, P) (R, error)) {
	s.methods[name] = method{prepare: typed(f), inline: true}
}

// HandleOrdered is Handle for a method with a first step that must happen in
// the order of the input: admit runs on the reading goroutine, after the
// calls read before it and before any read after it (a later inline call
// sees what it did), then f runs on a goroutine of its own with what admit
// returned. admit must not block. An error from admit is the reply (an
// *Error as is, any other as -32603) and f does not run, nor does undo. When
// the call is then refused (CodeServerBusy), the undo admit returned (if not
// nil) runs instead of f, on the reading goroutine. A panic in admit is a
// -32603 reply; one in undo is logged.
//
// The create method uses it to reserve its tag in order, so that a stop of
// the tag sent after it never misses the tool.
func HandleOrdered[P, T, R any](s *Server, name string, admit func(P) (T, func(), error), f func(context.Context, P, T) (R, error)) {
	s.methods[name] = method{prepare: func(raw json.RawMessage) (prepared, *Error) {
		var p P
		if err := decodeParams(raw, &p); err != nil {
			return prepared{}, err
		}
		var v T // set by admit on the reading goroutine, before run starts
		c := prepared{
			run: func(ctx context.Context) (any, error) { return f(ctx, p, v) },
			admit: func() (undo func(), err error) {
				v, undo, err = admit(p)
				return undo, err
			},
		}
		c.classify(p)
		return c, nil
	}}
}

func typed[P, R any](f func(context.Context, P) (R, error)) func(json.RawMessage) (prepared, *Error) {
	return func(raw json.RawMessage) (prepared, *Error) {
		var p P
		if err := decodeParams(raw, &p); err != nil {
			return prepared{}, err
		}
		c := prepared{run: func(ctx context.Context) (any, error) { return f(ctx, p) }}
		c.classify(p)
		return c, nil
	}
}

// classify sets what the params say of the call (LongWaiter, Lookup).
func (c *prepared) classify(p any) {
	if lw, ok := p.(LongWaiter); ok {
		c.waits = lw.WaitsLong()
	}
	if lk, ok := p.(Lookup); ok {
		c.inline = lk.IsLookup()
	}
}

// Serve serves the requests read from stream through a jsonrpc2.Conn until
// the input ends or ctx is done. It returns without waiting for calls in
// progress (a peer that stopped reading could hold their replies forever);
// the ctx passed to methods is then cancelled, so waits inside methods end
// too. The Conn stays open: replies and notifications still go out after the
// input ended (see Drain); Close closes it.
func (s *Server) Serve(ctx context.Context, stream *Stream) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.conn = jsonrpc2.NewConn(context.Background(), stream, handler{s, ctx}, jsonrpc2.SetLogger(slogLogger{s.log}))
	close(s.started)
	go s.notifier(stream)
	select {
	case <-stream.Ended():
	case <-ctx.Done():
	}
}

// Close closes the Conn Serve opened; nothing is sent after it.
func (s *Server) Close() error {
	select {
	case <-s.started:
		return s.conn.Close()
	default:
		return nil
	}
}

// slogLogger routes jsonrpc2's log lines to the sidecar's log.
type slogLogger struct{ log *slog.Logger }

func (l slogLogger) Printf(format string, v ...any) {
	l.log.Warn(fmt.Sprintf(format, v...), "from", "jsonrpc2")
}

// AfterReplier is implemented by a method's result that has something to
// do once the reply carrying it has been handed to the stream (it is written
// unless the peer stopped reading; Drain waits for that). The `shutdown`
// method's result uses it to exit only after its caller has the answer. It
// runs for a notification too, which gets no reply.
type AfterReplier interface {
	AfterReply()
}

// handler is a plain (not async) jsonrpc2.Handler: jsonrpc2 calls it on its
// reading goroutine, one request at a time, in the order of the input.
type handler struct {
	s   *Server
	ctx context.Context // cancelled when the input ends
}

// Handle decodes the params, then answers a lookup right there and starts
// any other call on a goroutine of its own — or refuses it at once with
// CodeServerBusy when its bound is reached. Reading goes on either way, so
// a long `stop` never delays a `running`, and the end of the input is
// always noticed.
func (h handler) Handle(_ context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request) {
	s := h.s
	var raw json.RawMessage
	if req.Params != nil {
		raw = *req.Params
	}
	m, ok := s.methods[req.Method]
	if !ok {
		s.reply(conn, req, nil, Errorf(CodeMethodNotFound, "method not found: %q", req.Method))
		return
	}
	c, perr := s.prepare(m, req.Method, raw)
	if perr != nil {
		s.reply(conn, req, nil, perr)
		return
	}
	var undo func()
	if c.admit != nil {
		var err error
		if undo, err = s.admit(req.Method, c); err != nil {
			s.reply(conn, req, nil, err)
			return
		}
	}
	if m.inline || c.inline {
		s.serve(h.ctx, conn, req, c)
		return
	}
	pool, limit, kind := s.calls, MaxConcurrentCalls, "calls"
	if c.waits {
		pool, limit, kind = s.waits, MaxWaitingCalls, "long waits"
	}
	select {
	case pool <- struct{}{}:
	default:
		s.undo(req.Method, undo)
		s.log.Warn("call refused: too many in progress", "method", req.Method, "kind", kind, "limit", limit)
		s.reply(conn, req, nil, Errorf(CodeServerBusy, "server busy: %d %s in progress; %s was not run, retry when some have returned", limit, kind, req.Method))
		return
	}
	// One call is admitted whatever its size (it passed --max-message).
	n := int64(len(raw))
	if prev := s.held.Add(n) - n; prev > 0 && prev+n > s.budget {
		s.held.Add(-n)
		<-pool
		s.undo(req.Method, undo)
		s.log.Warn("call refused: too many request bytes held", "method", req.Method, "budget", s.budget)
		s.reply(conn, req, nil, Errorf(CodeServerBusy, "server busy: calls in progress hold %d bytes of requests; %s was not run, retry when some have returned", s.budget, req.Method))
		return
	}
	s.inflight.Add(1)
	r := &jsonrpc2.Request{Method: req.Method, ID: req.ID, Notif: req.Notif} // not the params
	go func() {
		defer s.inflight.Add(-1)
		defer func() { <-pool }()
		defer s.held.Add(-n)
		s.serve(h.ctx, conn, r, c)
	}()
}

// prepare decodes a call's params, turning a panic into -32603.
func (s *Server) prepare(m method, name string, raw json.RawMessage) (c prepared, err *Error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("params decoding panicked", "method", name, "panic", r, "stack", string(debug.Stack()))
			c, err = prepared{}, Errorf(CodeInternalError, "internal error in %s: %v", name, r)
		}
	}()
	return m.prepare(raw)
}

// admit runs a HandleOrdered method's admit step, turning a panic into
// -32603.
func (s *Server) admit(name string, c prepared) (undo func(), err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("method's admission panicked", "method", name, "panic", r, "stack", string(debug.Stack()))
			undo, err = nil, Errorf(CodeInternalError, "internal error in %s: %v", name, r)
		}
	}()
	return c.admit()
}

// undo runs the undo of an admitted call that was refused; a panic in it is
// logged, not spread to the reading goroutine.
func (s *Server) undo(name string, undo func()) {
	if undo == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("undo of a refused call panicked", "method", name, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	undo()
}

// serve runs one call and replies to it unless it is a notification.
func (s *Server) serve(ctx context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request, c prepared) {
	result, err := s.call(ctx, req.Method, c)
	s.reply(conn, req, result, err)
	if a, ok := result.(AfterReplier); ok {
		a.AfterReply()
	}
}

// call runs one method, turning a panic into -32603 so that no handler can
// take the sidecar (and with it every tool) down.
func (s *Server) call(ctx context.Context, name string, c prepared) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("method panicked", "method", name, "panic", r, "stack", string(debug.Stack()))
			result, err = nil, Errorf(CodeInternalError, "internal error in %s: %v", name, r)
		}
	}()
	return c.run(ctx)
}

// reply sends the result or the error through the Conn (nothing for a
// notification). A result that cannot be encoded is reported as -32603.
func (s *Server) reply(conn *jsonrpc2.Conn, req *jsonrpc2.Request, result any, err error) {
	if req.Notif {
		return
	}
	if err == nil {
		err = conn.Reply(context.Background(), req.ID, result)
		if err == nil {
			return
		}
		if !isEncodingError(err) {
			s.log.Debug("reply not sent", "method", req.Method, "err", err)
			return
		}
		err = fmt.Errorf("encoding the result of %s: %w", req.Method, err)
	}
	var re *Error
	if !errors.As(err, &re) {
		re = &Error{Code: CodeInternalError, Message: err.Error()}
	}
	if err := conn.ReplyWithError(context.Background(), req.ID, re.wire()); err != nil {
		s.log.Debug("reply not sent", "method", req.Method, "err", err)
	}
}

// isEncodingError tells a result encoding/json cannot encode (answered with
// -32603) from a reply that could not be written (nothing more to do).
func isEncodingError(err error) bool {
	var (
		v *json.UnsupportedValueError
		t *json.UnsupportedTypeError
		m *json.MarshalerError
	)
	return errors.As(err, &v) || errors.As(err, &t) || errors.As(err, &m)
}

// Notify queues a notification to the peer. It never blocks: see NotifyGroup.
func (s *Server) Notify(method string, params any) {
	s.NotifyGroup(func(notify func(string, any)) { notify(method, params) })
}

// NotifyGroup queues the notifications emit sends, all or none: they are
// dropped together when they do not fit in the budget of notifications
// waiting (which happens only while the peer does not read). It never
// blocks. A group that is one event's notifications is thus lost whole,
// which keeps a gap in a sequence number carried by one of them an exact
// count of the events lost.
func (s *Server) NotifyGroup(emit func(notify func(method string, params any))) {
	var group []note
	size := 0
	emit(func(method string, params any) {
		b, err := json.Marshal(params)
		if err != nil {
			s.log.Error("notification not encodable", "method", method, "err", err)
			return
		}
		group = append(group, note{method, b})
		size += len(b) + len(method) + 40
	})
	s.nmu.Lock()
	if s.noteBytes > 0 && int64(s.noteBytes+size) > s.budget {
		s.dropped += int64(len(group))
		n := s.dropped
		s.nmu.Unlock()
		s.log.Warn("notifications dropped: the host is not reading", "count", len(group), "dropped_total", n)
		return
	}
	s.notes = append(s.notes, group...)
	s.noteBytes += size
	s.nmu.Unlock()
	select {
	case s.nwake <- struct{}{}:
	default:
	}
}

// notifier hands queued notifications to the Conn (conn.Notify) for as long
// as the process lives. conn.Notify waits when the stream's budget is spent;
// the queue in front of it is what keeps Notify from waiting.
func (s *Server) notifier(stream *Stream) {
	for range s.nwake {
		for {
			s.nmu.Lock()
			if len(s.notes) == 0 {
				s.nmu.Unlock()
				break
			}
			n := s.notes[0]
			s.notes[0] = note{}
			s.notes = s.notes[1:]
			s.nmu.Unlock()
			err := s.conn.Notify(context.Background(), n.method, n.params)
			s.nmu.Lock()
			s.noteBytes -= len(n.params) + len(n.method) + 40
			if err != nil {
				s.dropped++
			}
			s.nmu.Unlock()
			if err != nil {
				s.log.Warn("notification not sent", "method", n.method, "err", err)
			}
		}
	}
}

func (s *Server) notesIdle() bool {
	s.nmu.Lock()
	defer s.nmu.Unlock()
	return s.noteBytes == 0
}

// Drain waits, at most until ctx ends, for the calls in progress to reply and
// the queued replies and notifications to be written. The sidecar calls it
// before it exits, so that the host hears the end of what it asked for.
func (s *Server) Drain(ctx context.Context, stream *Stream) {
	drained := func() bool { return s.inflight.Load() == 0 && s.notesIdle() && stream.Idle() }
	if drained() {
		return
	}
	// Polled: the three are counted in different places, none signals.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !drained() {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
