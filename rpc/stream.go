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
	"strings"
	"sync"
)

// Stream reads JSON-RPC 2.0 requests from a byte stream and writes frames
// back. It never lets one bad message end the connection: a frame that is
// not a well-formed request is answered here with an error response (id null
// when the id cannot be read) and reading goes on. Responses from the peer
// are dropped and logged: the sidecar makes no calls.
type Stream struct {
	in     frameReader
	out    *bufio.Writer
	write  frameWriter
	closer io.Closer
	max    int
	log    *slog.Logger

	wmu sync.Mutex // one frame at a time on out
}

// Request is one valid request or notification.
type Request struct {
	ID     json.RawMessage // as sent (a string or an integer); nil for a notification
	Method string
	Params json.RawMessage // an object, or nil when absent or null
}

// Notif reports whether the request is a notification (no reply is due).
func (r *Request) Notif() bool { return r.ID == nil }

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

// Read returns the next valid request, answering every bad frame on the
// way, or the error that ended the input (io.EOF when the peer closed it).
func (s *Stream) Read() (*Request, error) {
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
			return nil, err
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
		return req, nil
	}
}

func (s *Stream) writeFrame(body []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.write(s.out, body)
}

// Close closes the input side.
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

// wireRequest is every member a request (or a stray response) may carry.
type wireRequest struct {
	JSONRPC json.RawMessage `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  json.RawMessage `json:"method"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

// checkRequest validates a frame as a single JSON-RPC 2.0 request or
// notification with object (or absent/null) params, in one decoding pass.
func checkRequest(frame []byte) (*Request, *requestError) {
	var w wireRequest
	dec := json.NewDecoder(bytes.NewReader(frame))
	dec.DisallowUnknownFields()
	err := dec.Decode(&w)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			return nil, &requestError{code: CodeParseError, msg: "parse error: data after the JSON value"}
		}
	}
	var unknown string
	if err != nil {
		var syn *json.SyntaxError
		switch msg := err.Error(); {
		case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
			return nil, &requestError{code: CodeParseError, msg: "parse error: " + msg}
		case frame[0] == '[':
			return nil, &requestError{code: CodeInvalidRequest, msg: "invalid request: batches are not supported; send one request per message"}
		case strings.HasPrefix(msg, "json: unknown field "):
			unknown = strings.TrimPrefix(msg, "json: unknown field ")
			// Decode again, leniently, to learn the id to echo.
			w = wireRequest{}
			if json.Unmarshal(frame, &w) != nil {
				return nil, &requestError{code: CodeInvalidRequest, msg: "invalid request: unknown member " + unknown}
			}
		default:
			return nil, &requestError{code: CodeInvalidRequest, msg: "invalid request: a request must be a JSON object"}
		}
	}
	if frame[0] != '{' { // null decodes into the struct without error
		return nil, &requestError{code: CodeInvalidRequest, msg: "invalid request: a request must be a JSON object"}
	}
	var id json.RawMessage
	if w.ID != nil {
		if !validID(w.ID) {
			return nil, &requestError{code: CodeInvalidRequest, msg: "invalid request: id must be a string or a non-negative integer"}
		}
		id = w.ID
	}
	if w.Method == nil && unknown == "" {
		if w.Result != nil {
			return nil, &requestError{msg: "a response from the host, but the sidecar makes no calls"}
		}
		if w.Error != nil {
			return nil, &requestError{msg: "an error response from the host, but the sidecar makes no calls"}
		}
	}
	if string(bytes.TrimSpace(w.JSONRPC)) != `"2.0"` {
		return nil, &requestError{id: id, code: CodeInvalidRequest, msg: `invalid request: "jsonrpc" must be "2.0"`}
	}
	var method string
	if err := json.Unmarshal(w.Method, &method); err != nil || method == "" {
		return nil, &requestError{id: id, code: CodeInvalidRequest, msg: `invalid request: "method" must be a non-empty string`}
	}
	switch {
	case unknown != "":
		return nil, &requestError{id: id, code: CodeInvalidRequest, msg: "invalid request: unknown member " + unknown}
	case w.Result != nil:
		return nil, &requestError{id: id, code: CodeInvalidRequest, msg: `invalid request: unknown member "result"`}
	case w.Error != nil:
		return nil, &requestError{id: id, code: CodeInvalidRequest, msg: `invalid request: unknown member "error"`}
	}
	params := bytes.TrimSpace(w.Params)
	switch {
	case len(params) == 0 || string(params) == "null":
		params = nil
	case params[0] != '{':
		return nil, &requestError{id: id, code: CodeInvalidParams, msg: "invalid params: params must be a JSON object"}
	}
	return &Request{ID: id, Method: method, Params: params}, nil
}

// validID accepts a string, or an integer from 0 to 2^63-1 (what common
// clients, and the Go and Python clients here, send).
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
