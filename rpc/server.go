package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sourcegraph/jsonrpc2"
)

// Limits of a Server. Both bound what a peer can make the sidecar hold.
const (
	// MaxConcurrentCalls bounds calls in progress; past it the reader waits
	// (backpressure) instead of starting more goroutines.
	MaxConcurrentCalls = 1024
	// NotifyQueue bounds notifications waiting to be written. When the peer
	// stops reading and the queue fills, further notifications are dropped and
	// counted, so the code that emits them never blocks.
	NotifyQueue = 4096
)

type method func(ctx context.Context, params json.RawMessage) (any, error)

// Server dispatches JSON-RPC requests to registered methods.
type Server struct {
	log     *slog.Logger
	methods map[string]method
	calls   chan struct{}
	notes   chan notification
	dropped atomic.Int64

	mu   sync.Mutex
	conn *jsonrpc2.Conn
}

type notification struct {
	method string
	params any
}

// NewServer returns a Server with no methods.
func NewServer(log *slog.Logger) *Server {
	return &Server{
		log:     log,
		methods: make(map[string]method),
		calls:   make(chan struct{}, MaxConcurrentCalls),
		notes:   make(chan notification, NotifyQueue),
	}
}

// Handle registers f as method name. Params are decoded strictly into P: an
// unknown field or a wrong type is a -32602 naming the field; absent or null
// params decode as {}. f's result is encoded as the reply; an *Error it
// returns is sent as is, any other error as -32603.
func Handle[P, R any](s *Server, name string, f func(context.Context, P) (R, error)) {
	s.methods[name] = func(ctx context.Context, raw json.RawMessage) (any, error) {
		var p P
		if err := decodeParams(raw, &p); err != nil {
			return nil, err
		}
		return f(ctx, p)
	}
}

func decodeParams(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		raw = json.RawMessage("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return paramsError(err)
	}
	return nil
}

// paramsError turns encoding/json's errors into messages that name the field.
func paramsError(err error) *Error {
	var te *json.UnmarshalTypeError
	var ue interface{ Unwrap() error }
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return Errorf(CodeInvalidParams, "invalid params: params must be a JSON object")
		}
		return Errorf(CodeInvalidParams, "invalid params: field %q must be %s, not %s", field, jsonKind(te.Type.Kind().String()), te.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return Errorf(CodeInvalidParams, "invalid params: unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	case errors.As(err, &ue):
		return Errorf(CodeInvalidParams, "invalid params: %v", ue.Unwrap())
	}
	return Errorf(CodeInvalidParams, "invalid params: %v", err)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "slice", "array":
		return "an array"
	case "map", "struct", "ptr", "interface":
		return "an object"
	case "float64", "float32":
		return "a number"
	default:
		if strings.HasPrefix(goKind, "int") || strings.HasPrefix(goKind, "uint") {
			return "an integer"
		}
		return goKind
	}
}

// Serve reads requests from stream until it ends, serving calls concurrently.
// It returns as soon as the peer closes its side or the stream fails, without
// waiting for calls in progress (a peer that stopped reading could hold their
// replies forever); ctx, passed to methods, is then cancelled, so waits inside
// methods end too.
func (s *Server) Serve(ctx context.Context, stream *Stream) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conn := jsonrpc2.NewConn(ctx, stream, handler{s}, jsonrpc2.SetLogger(slogLogger{s.log}))
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()
	go s.notifier(ctx, conn)
	<-conn.DisconnectNotify()
}

type handler struct{ s *Server }

type afterReplyKey struct{}

// AfterReply arranges for f to run once the reply to the call that ctx
// belongs to has been written (or failed to be). The `shutdown` method uses
// it to exit only after its caller has the answer.
func AfterReply(ctx context.Context, f func()) {
	if hooks, ok := ctx.Value(afterReplyKey{}).(*[]func()); ok {
		*hooks = append(*hooks, f)
	}
}

// Handle runs on jsonrpc2's reader goroutine: it waits for a call slot (so a
// peer cannot start unbounded goroutines) and serves the call on its own.
func (h handler) Handle(ctx context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request) {
	select {
	case h.s.calls <- struct{}{}:
	case <-ctx.Done():
		return
	}
	go func() {
		defer func() { <-h.s.calls }()
		var hooks []func()
		defer func() {
			for _, f := range hooks {
				f()
			}
		}()
		ctx := context.WithValue(ctx, afterReplyKey{}, &hooks)
		result, err := h.s.call(ctx, req)
		if req.Notif {
			return
		}
		resp := &jsonrpc2.Response{ID: req.ID}
		if err == nil {
			err = resp.SetResult(result)
		}
		if err != nil {
			var re *Error
			if !errors.As(err, &re) {
				re = &Error{Code: CodeInternalError, Message: err.Error()}
			}
			resp.Error = re.wire()
		}
		if err := conn.SendResponse(ctx, resp); err != nil {
			h.s.log.Debug("reply not sent", "method", req.Method, "err", err)
		}
	}()
}

// call runs one method, turning a panic into -32603 so that no handler can
// take the sidecar (and with it every tool) down.
func (s *Server) call(ctx context.Context, req *jsonrpc2.Request) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("method panicked", "method", req.Method, "panic", r, "stack", string(debug.Stack()))
			result, err = nil, Errorf(CodeInternalError, "internal error in %s: %v", req.Method, r)
		}
	}()
	m, ok := s.methods[req.Method]
	if !ok {
		return nil, Errorf(CodeMethodNotFound, "method not found: %q", req.Method)
	}
	var raw json.RawMessage
	if req.Params != nil {
		raw = *req.Params
	}
	return m(ctx, raw)
}

// Notify queues a notification to the peer. It never blocks: when the queue
// is full the notification is dropped, counted and logged.
func (s *Server) Notify(method string, params any) {
	select {
	case s.notes <- notification{method, params}:
	default:
		n := s.dropped.Add(1)
		s.log.Warn("notification dropped: the host is not reading", "method", method, "dropped_total", n)
	}
}

// Dropped is how many notifications were dropped because the queue was full.
func (s *Server) Dropped() int64 { return s.dropped.Load() }

func (s *Server) notifier(ctx context.Context, conn *jsonrpc2.Conn) {
	for {
		select {
		case n := <-s.notes:
			if err := conn.Notify(ctx, n.method, n.params); err != nil {
				s.log.Debug("notification not sent", "method", n.method, "err", err)
			}
		case <-ctx.Done():
			return
		}
	}
}

// Flush writes the queued notifications, for at most as long as ctx allows.
// Used at shutdown so that the last exits are reported.
func (s *Server) Flush(ctx context.Context) {
	s.mu.Lock()
	conn := s.conn
	s.mu.Unlock()
	if conn == nil {
		return
	}
	for {
		select {
		case n := <-s.notes:
			done := make(chan struct{})
			go func() { conn.Notify(ctx, n.method, n.params); close(done) }()
			select {
			case <-done:
			case <-ctx.Done():
				return
			}
		default:
			return
		}
	}
}

type slogLogger struct{ log *slog.Logger }

func (l slogLogger) Printf(format string, v ...any) {
	l.log.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)))
}
