package jsonrpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/sourcegraph/jsonrpc2"
)

// requestError is why a frame is not a request that is served. code 0 means
// drop it without a reply (a response object: replying could ping-pong).
type requestError struct {
	id   *jsonrpc2.ID // echoed when the frame has a valid id, else nil (null)
	code int64
	msg  string
}

// checkRequest validates a frame as one JSON-RPC 2.0 request or
// notification before jsonrpc2 sees it: jsonrpc2's Conn closes the
// connection on a message it cannot decode, and decodes leniently what it
// can (member names case-insensitively, a null id as a notification, any
// extra member). What passes here jsonrpc2 decodes without error.
//
// The rules: the frame is valid UTF-8 and one JSON object; member names are
// exact (case-sensitive) and none appears twice in any object of the frame,
// params included; "jsonrpc" is "2.0"; "method" a non-empty string; "id",
// when present, a string or an integer 0..2^63-1; "params" absent, null or
// an object; no other member.
func checkRequest(frame []byte) *requestError {
	if !utf8.Valid(frame) {
		return &requestError{code: CodeParseError, msg: "parse error: the message is not valid UTF-8"}
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(frame, &members); err != nil {
		var syn *json.SyntaxError
		switch {
		case errors.As(err, &syn):
			return &requestError{code: CodeParseError, msg: "parse error: " + err.Error()}
		case frame[0] == '[':
			return &requestError{code: CodeInvalidRequest, msg: "invalid request: batches are not supported; send one request per message"}
		}
		return &requestError{code: CodeInvalidRequest, msg: "invalid request: a request must be a JSON object"}
	}
	if members == nil { // null
		return &requestError{code: CodeInvalidRequest, msg: "invalid request: a request must be a JSON object"}
	}
	var id *jsonrpc2.ID
	if raw, ok := members["id"]; ok {
		if id = parseID(raw); id == nil {
			return &requestError{code: CodeInvalidRequest, msg: "invalid request: id must be a string or an integer from 0 to 2^63-1"}
		}
	}
	if name, depth, dup := duplicateKey(frame); dup {
		if depth == 1 {
			return &requestError{id: id, code: CodeInvalidRequest, msg: "invalid request: member " + strconv.Quote(name) + " appears twice"}
		}
		return &requestError{id: id, code: CodeInvalidParams, msg: "invalid params: field " + strconv.Quote(name) + " appears twice in one object"}
	}
	_, hasMethod := members["method"]
	_, hasResult := members["result"]
	_, hasError := members["error"]
	if !hasMethod && (hasResult || hasError) {
		return &requestError{msg: "a response from the host, but the sidecar makes no calls"}
	}
	var unknown []string
	for name := range members {
		switch name {
		case "jsonrpc", "id", "method", "params":
		default:
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return &requestError{id: id, code: CodeInvalidRequest, msg: "invalid request: unknown member " + strconv.Quote(unknown[0]) + " (member names are case-sensitive)"}
	}
	if string(bytes.TrimSpace(members["jsonrpc"])) != `"2.0"` {
		return &requestError{id: id, code: CodeInvalidRequest, msg: `invalid request: "jsonrpc" must be "2.0"`}
	}
	var method string
	if json.Unmarshal(members["method"], &method) != nil || method == "" {
		return &requestError{id: id, code: CodeInvalidRequest, msg: `invalid request: "method" must be a non-empty string`}
	}
	if p := bytes.TrimSpace(members["params"]); len(p) > 0 && p[0] != '{' && string(p) != "null" {
		return &requestError{id: id, code: CodeInvalidParams, msg: "invalid params: params must be a JSON object"}
	}
	return nil
}

// parseID accepts a string, or an integer from 0 to 2^63-1 (what common
// clients, and the Go and Python clients here, send); nil otherwise.
func parseID(raw json.RawMessage) *jsonrpc2.ID {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil
		}
		return &jsonrpc2.ID{Str: s, IsString: true}
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || n < 0 {
		return nil
	}
	return &jsonrpc2.ID{Num: uint64(n)}
}

// duplicateKey reports the first member name that appears twice in one
// object of data, which must be valid JSON, and the depth of that object (1
// for the outermost). encoding/json keeps the last of duplicates silently;
// the protocol refuses them instead.
func duplicateKey(data []byte) (name string, depth int, found bool) {
	s := dupScanner{b: data}
	s.value(0)
	return s.name, s.depth, s.found
}

type dupScanner struct {
	b     []byte
	i     int
	name  string
	depth int
	found bool
}

func (s *dupScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *dupScanner) value(depth int) {
	s.ws()
	if s.i >= len(s.b) || s.found {
		return
	}
	switch s.b[s.i] {
	case '{':
		s.object(depth + 1)
	case '[':
		s.i++
		for !s.found {
			s.ws()
			if s.i >= len(s.b) {
				return
			}
			if s.b[s.i] == ']' {
				s.i++
				return
			}
			if s.b[s.i] == ',' {
				s.i++
			}
			s.value(depth)
		}
	case '"':
		s.str()
	default:
		for s.i < len(s.b) && bytes.IndexByte([]byte(",]} \t\r\n"), s.b[s.i]) < 0 {
			s.i++
		}
	}
}

// str skips a string and returns its raw contents (without quotes).
func (s *dupScanner) str() []byte {
	s.i++ // the opening quote
	start := s.i
	for s.i < len(s.b) {
		j := bytes.IndexAny(s.b[s.i:], `"\`)
		if j < 0 {
			s.i = len(s.b)
			break
		}
		s.i += j
		if s.b[s.i] == '\\' {
			s.i += 2
			continue
		}
		s.i++
		return s.b[start : s.i-1]
	}
	return s.b[start:]
}

func (s *dupScanner) object(depth int) {
	s.i++ // '{'
	var keys []string
	var set map[string]struct{}
	for !s.found {
		s.ws()
		if s.i >= len(s.b) {
			return
		}
		switch s.b[s.i] {
		case '}':
			s.i++
			return
		case ',':
			s.i++
			continue
		}
		raw := s.str()
		key := string(raw)
		if bytes.IndexByte(raw, '\\') >= 0 { // "a" and "\u0061" are one name
			json.Unmarshal(s.b[s.i-len(raw)-2:s.i], &key)
		}
		if set != nil {
			_, s.found = set[key]
			set[key] = struct{}{}
		} else {
			s.found = slices.Contains(keys, key)
			keys = append(keys, key)
			if len(keys) > 16 {
				set = make(map[string]struct{}, 32)
				for _, k := range keys {
					set[k] = struct{}{}
				}
			}
		}
		if s.found {
			s.name, s.depth = key, depth
			return
		}
		s.ws()
		s.i++ // ':'
		s.value(depth)
	}
}
