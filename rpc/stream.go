package rpc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
)

// Stream is a jsonrpc2.ObjectStream that never lets one bad message end the
// connection. Every frame is validated before jsonrpc2 sees it; a frame that
// is not a well-formed JSON-RPC 2.0 request is answered here with an error
// response (id null when the id cannot be read) and reading goes on.
// Responses from the peer are dropped and logged: the sidecar makes no calls.
type Stream struct {
	in     frameReader
	out    *bufio.Writer
	write  frameWriter
	closer io.Closer
	max    int
	log    *slog.Logger

	wmu sync.Mutex // one frame at a time on out

	// params of the request ReadObject returned last. jsonrpc2 reads and
	// dispatches on one goroutine, one message at a time, so the handler
	// takes them (takeParams) before the next ReadObject can replace them.
	params json.RawMessage
}

// takeParams returns the params of the request just read; only the handler
// called for that request, on the reading goroutine, may call it.
func (s *Stream) takeParams() json.RawMessage {
	p := s.params
	s.params = nil
	return p
}

// NewStream reads frames from r and writes them to w; Close calls closer.
// maxMessage bounds an incoming frame in bytes.
func NewStream(r io.Reader, w io.Writer, closer io.Closer, framing Framing, maxMessage int, log *slog.Logger) (*Stream, error) {
	s := &Stream{out: bufio.NewWriterSize(w, 64*1024), closer: closer, max: maxMessage, log: log}
	br := bufio.NewReaderSize(r, 64*1024)
	switch framing {
	case FramingLine, "":
		s.in, s.write = &lineReader{r: br, max: maxMessage}, writeLine
	case FramingHeader:
		s.in, s.write = &headerReader{r: br, max: maxMessage}, writeHeader
	default:
		return nil, fmt.Errorf("unknown framing %q (want %q or %q)", framing, FramingLine, FramingHeader)
	}
	return s, nil
}

// ReadObject implements jsonrpc2.ObjectStream. It returns only a valid request
// (decoded into v) or the error that ended the input (io.EOF when the peer
// closed it).
func (s *Stream) ReadObject(v any) error {
	for {
		frame, err := s.in.next()
		var bad errBadHeader
		switch {
		case errors.Is(err, errFrameTooLarge):
			s.log.Warn("skipped an over-long message", "max_bytes", s.max)
			s.writeError(nil, CodeInvalidRequest, fmt.Sprintf("message larger than the %d-byte limit (--max-message) was skipped", s.max))
			continue
		case errors.As(err, &bad):
			s.writeError(nil, CodeParseError, "parse error: "+bad.reason)
			continue
		case err != nil:
			return err
		}
		req, perr := checkRequest(frame)
		if perr != nil {
			if perr.code != 0 {
				s.writeError(perr.id, perr.code, perr.msg)
			} else {
				s.log.Warn("dropped a message", "reason", perr.msg)
			}
			continue
		}
		// jsonrpc2 decodes a message several times over (params through a
		// map of interfaces and back); it gets only the envelope, and the
		// params, already split out, travel beside it (see takeParams).
		env := make([]byte, 0, 64+len(req.method)+len(req.id))
		env = append(env, `{"jsonrpc":"2.0","method":`...)
		env = append(env, req.method...)
		if req.id != nil {
			env = append(append(env, `,"id":`...), req.id...)
		}
		env = append(env, '}')
		if err := json.Unmarshal(env, v); err != nil {
			s.writeError(nil, CodeInvalidRequest, "invalid request: "+err.Error())
			continue
		}
		s.params = req.params
		return nil
	}
}

// WriteObject implements jsonrpc2.ObjectStream.
func (s *Stream) WriteObject(obj any) error {
	body, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	return s.writeFrame(body)
}

func (s *Stream) writeFrame(body []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.write(s.out, body)
}

// Close implements jsonrpc2.ObjectStream.
func (s *Stream) Close() error { return s.closer.Close() }

func (s *Stream) writeError(id json.RawMessage, code int64, msg string) {
	if id == nil {
		id = json.RawMessage("null")
	}
	body, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   struct {
			Code    int64  `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}{JSONRPC: "2.0", ID: id, Error: struct {
		Code    int64  `json:"code"`
		Message string `json:"message"`
	}{code, msg}})
	if err := s.writeFrame(body); err != nil {
		s.log.Debug("write error response", "err", err)
	}
}

// requestError is why a frame is not a request we serve. code 0 means drop
// it without a reply (a response object: replying could ping-pong forever).
type requestError struct {
	id   json.RawMessage // echoed when it is a valid id, else nil (null)
	code int64
	msg  string
}

var allowedMembers = map[string]bool{"jsonrpc": true, "id": true, "method": true, "params": true}

// request is a frame that passed checkRequest, split into its members.
type request struct {
	id     json.RawMessage // nil for a notification
	method json.RawMessage // a JSON string
	params json.RawMessage // nil when absent
}

// checkRequest validates a frame as a single JSON-RPC 2.0 request or
// notification with object (or absent/null) params, in one decoding pass.
func checkRequest(frame []byte) (*request, *requestError) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(frame, &m); err != nil {
		var syn *json.SyntaxError
		switch {
		case errors.As(err, &syn):
			return nil, &requestError{code: CodeParseError, msg: "parse error: " + err.Error()}
		case frame[0] == '[':
			return nil, &requestError{code: CodeInvalidRequest, msg: "invalid request: batches are not supported; send one request per message"}
		default:
			return nil, &requestError{code: CodeInvalidRequest, msg: "invalid request: a request must be a JSON object"}
		}
	}
	if m == nil { // the frame was null
		return nil, &requestError{code: CodeInvalidRequest, msg: "invalid request: a request must be a JSON object"}
	}
	rawID, hasID := m["id"]
	var id json.RawMessage
	if hasID {
		if !validID(rawID) {
			return nil, &requestError{code: CodeInvalidRequest, msg: "invalid request: id must be a string or a non-negative integer"}
		}
		id = rawID
	}
	if _, isCall := m["method"]; !isCall {
		if _, r := m["result"]; r {
			return nil, &requestError{msg: "a response from the host, but the sidecar makes no calls"}
		}
		if _, e := m["error"]; e {
			return nil, &requestError{msg: "an error response from the host, but the sidecar makes no calls"}
		}
	}
	if v, ok := m["jsonrpc"]; !ok || string(bytes.TrimSpace(v)) != `"2.0"` {
		return nil, &requestError{id: id, code: CodeInvalidRequest, msg: `invalid request: "jsonrpc" must be "2.0"`}
	}
	var method string
	if err := json.Unmarshal(m["method"], &method); err != nil || method == "" {
		return nil, &requestError{id: id, code: CodeInvalidRequest, msg: `invalid request: "method" must be a non-empty string`}
	}
	for k := range m {
		if !allowedMembers[k] {
			return nil, &requestError{id: id, code: CodeInvalidRequest, msg: fmt.Sprintf("invalid request: unknown member %q", k)}
		}
	}
	p, hasParams := m["params"]
	if hasParams {
		p = bytes.TrimSpace(p)
		if len(p) > 0 && p[0] != '{' && string(p) != "null" {
			return nil, &requestError{id: id, code: CodeInvalidParams, msg: "invalid params: params must be a JSON object"}
		}
	}
	return &request{id: id, method: m["method"], params: p}, nil
}

// validID accepts what jsonrpc2.ID round-trips exactly: a string, or an
// integer from 0 to 2^63-1.
func validID(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return false
	}
	if raw[0] == '"' {
		var s string
		return json.Unmarshal(raw, &s) == nil
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	return err == nil && n >= 0
}
