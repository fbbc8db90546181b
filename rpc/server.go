package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"
)

// Limits of a Server. Both bound what a peer can make the sidecar hold.
const (
	// MaxConcurrentCalls bounds calls in progress; past it a call is refused
	// at once (CodeServerBusy) rather than queued: the reader never stops, so
	// the end of the input is always seen.
	MaxConcurrentCalls = 4096
	// NotifyQueue bounds notifications waiting to be written. When the peer
	// stops reading and the queue fills, further notifications are dropped and
	// counted, so the code that emits them never blocks.
	NotifyQueue = 4096
)

type method struct {
	fn func(ctx context.Context, params json.RawMessage) (any, error)
	// inline methods answer at once without blocking: they are served on
	// the reading goroutine, sparing a goroutine start and a thread wake-up.
	inline bool
}

// Server dispatches JSON-RPC requests to registered methods.
type Server struct {
	log      *slog.Logger
	methods  map[string]method
	calls    chan struct{}
	notes    chan notification
	dropped  atomic.Int64
	inflight atomic.Int64 // calls being served
	unsent   atomic.Int64 // notifications queued or being written

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
	s.methods[name] = method{fn: typed(f)}
}

// HandleInline is Handle for a method that answers at once and never blocks
// (a lookup): it runs on the reading goroutine, in order with the input.
func HandleInline[P, R any](s *Server, name string, f func(context.Context, P) (R, error)) {
	s.methods[name] = method{fn: typed(f), inline: true}
}

func typed[P, R any](f func(context.Context, P) (R, error)) func(context.Context, json.RawMessage) (any, error) {
	return func(ctx context.Context, raw json.RawMessage) (any, error) {
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
	if err := strictDecode(raw, v); err != nil {
		return paramsError(err, raw, v)
	}
	return nil
}

func strictDecode(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// paramsError turns encoding/json's errors into messages that name the field.
// Errors from a field's own UnmarshalJSON do not say which field failed, so
// then each member is decoded alone to find it.
func paramsError(err error, raw []byte, v any) *Error {
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &te) && te.Field != "":
		return Errorf(CodeInvalidParams, "invalid params: field %q must be %s, not %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
	case errors.As(err, &te):
		return Errorf(CodeInvalidParams, "invalid params: params must be a JSON object")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return Errorf(CodeInvalidParams, "invalid params: unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	if field, ferr := failingField(raw, v); field != "" {
		return Errorf(CodeInvalidParams, "invalid params: field %q: %v", field, ferr)
	}
	return Errorf(CodeInvalidParams, "invalid params: %v", err)
}

// failingField decodes each member of the params object into its own field of
// v's struct type and returns the first member that fails, with its error.
func failingField(raw []byte, v any) (string, error) {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return "", nil
	}
	var members map[string]json.RawMessage
	if json.Unmarshal(raw, &members) != nil {
		return "", nil
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" {
			name = f.Name
		}
		m, ok := members[name]
		if !ok {
			continue
		}
		if err := strictDecode(m, reflect.New(f.Type).Interface()); err != nil {
			return name, err
		}
	}
	return "", nil
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
// It returns as soon as the peer closes its input or the stream fails,
// without waiting for calls in progress (a peer that stopped reading could
// hold their replies forever); ctx, passed to methods, is then cancelled, so
// waits inside methods end too. Replies and notifications still go out after
// the input ended; see Drain.
func (s *Server) Serve(ctx context.Context, stream *Stream) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go s.notifier(stream)
	for {
		req, err := stream.Read()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.log.Warn("input ended", "err", err)
			}
			return
		}
		s.dispatch(ctx, stream, req)
	}
}

type afterReplyKey struct{}

// AfterReply arranges for f to run once the reply to the call that ctx
// belongs to has been written (or failed to be). The `shutdown` method uses
// it to exit only after its caller has the answer.
func AfterReply(ctx context.Context, f func()) {
	if hooks, ok := ctx.Value(afterReplyKey{}).(*[]func()); ok {
		*hooks = append(*hooks, f)
	}
}

// dispatch runs on the reading goroutine. An inline method (and "method not
// found") is answered right there; any other call runs on its own goroutine,
// or — past MaxConcurrentCalls in progress — is refused at once with
// CodeServerBusy. Reading goes on either way, so the end of the input is
// always noticed.
func (s *Server) dispatch(ctx context.Context, stream *Stream, req *Request) {
	m, ok := s.methods[req.Method]
	if !ok || m.inline {
		s.serve(ctx, stream, req, m)
		return
	}
	select {
	case s.calls <- struct{}{}:
	default:
		s.log.Warn("call refused: too many in progress", "method", req.Method, "limit", MaxConcurrentCalls)
		if !req.Notif() {
			reply(stream, s.log, req, nil, Errorf(CodeServerBusy, "server busy: %d calls in progress; %s was not run, retry when some have returned", MaxConcurrentCalls, req.Method))
		}
		return
	}
	s.inflight.Add(1)
	go func() {
		defer s.inflight.Add(-1)
		defer func() { <-s.calls }()
		s.serve(ctx, stream, req, m)
	}()
}

// serve runs one call (m is the zero method when none is registered) and
// replies to it unless it is a notification.
func (s *Server) serve(ctx context.Context, stream *Stream, req *Request, m method) {
	var hooks []func()
	defer func() {
		for _, f := range hooks {
			f()
		}
	}()
	ctx = context.WithValue(ctx, afterReplyKey{}, &hooks)
	result, err := s.call(ctx, req.Method, m, req.Params)
	if !req.Notif() {
		reply(stream, s.log, req, result, err)
	}
}

// reply encodes the response once, straight into its frame, echoing the
// request's id as it was sent.
func reply(stream *Stream, log *slog.Logger, req *Request, result any, err error) {
	body := make([]byte, 0, 256)
	body = append(body, `{"jsonrpc":"2.0","id":`...)
	body = append(body, req.ID...)
	var res []byte
	if err == nil {
		res, err = json.Marshal(result)
	}
	if err != nil {
		var re *Error
		if !errors.As(err, &re) {
			re = &Error{Code: CodeInternalError, Message: err.Error()}
		}
		res = re.marshal()
		body = append(body, `,"error":`...)
	} else {
		body = append(body, `,"result":`...)
	}
	body = append(append(body, res...), '}')
	if err := stream.writeFrame(body); err != nil {
		log.Debug("reply not sent", "method", req.Method, "err", err)
	}
}

// call runs one method, turning a panic into -32603 so that no handler can
// take the sidecar (and with it every tool) down.
func (s *Server) call(ctx context.Context, name string, m method, params json.RawMessage) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("method panicked", "method", name, "panic", r, "stack", string(debug.Stack()))
			result, err = nil, Errorf(CodeInternalError, "internal error in %s: %v", name, r)
		}
	}()
	if m.fn == nil {
		return nil, Errorf(CodeMethodNotFound, "method not found: %q", name)
	}
	return m.fn(ctx, params)
}

// Notify queues a notification to the peer. It never blocks: when the queue
// is full the notification is dropped, counted and logged.
func (s *Server) Notify(method string, params any) {
	s.unsent.Add(1)
	select {
	case s.notes <- notification{method, params}:
	default:
		s.unsent.Add(-1)
		n := s.dropped.Add(1)
		s.log.Warn("notification dropped: the host is not reading", "method", method, "dropped_total", n)
	}
}

// notifier writes queued notifications for as long as the process lives.
func (s *Server) notifier(stream *Stream) {
	for n := range s.notes {
		params, err := json.Marshal(n.params)
		if err == nil {
			method, _ := json.Marshal(n.method)
			body := make([]byte, 0, len(params)+len(method)+40)
			body = append(append(body, `{"jsonrpc":"2.0","method":`...), method...)
			body = append(append(append(body, `,"params":`...), params...), '}')
			err = stream.writeFrame(body)
		}
		if err != nil {
			s.log.Debug("notification not sent", "method", n.method, "err", err)
		}
		s.unsent.Add(-1)
	}
}

// Drain waits, at most until ctx ends, for the calls in progress to reply and
// the queued notifications to be written. The sidecar calls it before it
// exits, so that the host hears the end of what it asked for.
func (s *Server) Drain(ctx context.Context) {
	for s.inflight.Load() > 0 || s.unsent.Load() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Millisecond):
		}
	}
}
