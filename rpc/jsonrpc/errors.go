package jsonrpc

import (
	"encoding/json"
	"fmt"

	"github.com/sourcegraph/jsonrpc2"
)

// Standard JSON-RPC 2.0 error codes.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
	// CodeServerBusy: the call was not run, because the calls of its kind in
	// progress (MaxConcurrentCalls, MaxWaitingCalls) or the request bytes
	// they hold (Budget) are at their bound (a JSON-RPC "server error" code).
	CodeServerBusy = -32000
)

// Error is a JSON-RPC error a method returns to its caller. Any other error
// a method returns is reported as -32603 with its message.
type Error struct {
	Code    int64
	Message string
	// Reason is error.data.reason: one stable snake_case word that clients
	// branch on (the message is for people and may change). Empty means the
	// code's own word (DefaultReason).
	Reason string
	// Data is encoded as error.data when it is a JSON object: its members
	// come after "reason". Data that is not an object is left out.
	Data any
}

// Reasons of the codes JSON-RPC defines, and of CodeServerBusy.
const (
	ReasonParseError     = "parse_error"
	ReasonInvalidRequest = "invalid_request"
	ReasonMethodNotFound = "method_not_found"
	ReasonInvalidParams  = "invalid_params"
	ReasonInternalError  = "internal_error"
	ReasonServerBusy     = "server_busy"
)

// DefaultReason is the reason word of an error with the code and no reason
// of its own: the word for JSON-RPC's codes, "error" for any other.
func DefaultReason(code int64) string {
	switch code {
	case CodeParseError:
		return ReasonParseError
	case CodeInvalidRequest:
		return ReasonInvalidRequest
	case CodeMethodNotFound:
		return ReasonMethodNotFound
	case CodeInvalidParams:
		return ReasonInvalidParams
	case CodeInternalError:
		return ReasonInternalError
	case CodeServerBusy:
		return ReasonServerBusy
	}
	return "error"
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%d)", e.Message, e.Code) }

// Errorf builds an *Error.
func Errorf(code int64, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// wire is the error as jsonrpc2 sends it: error.data is always an object
// with "reason" first. Data that cannot be encoded, or is no object, is left
// out rather than losing the error.
func (e *Error) wire() *jsonrpc2.Error {
	reason := e.Reason
	if reason == "" {
		reason = DefaultReason(e.Code)
	}
	b, _ := json.Marshal(reason) // a string always encodes
	data := append([]byte(`{"reason":`), b...)
	if e.Data != nil {
		if more, err := json.Marshal(e.Data); err == nil && len(more) > 2 && more[0] == '{' {
			data = append(append(data, ','), more[1:len(more)-1]...)
		}
	}
	data = append(data, '}')
	return &jsonrpc2.Error{Code: e.Code, Message: e.Message, Data: (*json.RawMessage)(&data)}
}

// errorResponse is the one encoder of an error reply. jsonrpc2.Response
// cannot carry the null id that a reply to an unreadable request needs, so
// the stream's own replies are built here; the Server's go through
// Conn.ReplyWithError with the same wire() error object.
func errorResponse(id *jsonrpc2.ID, e *Error) []byte {
	b, err := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      *jsonrpc2.ID    `json:"id"` // nil is null
		Error   *jsonrpc2.Error `json:"error"`
	}{"2.0", id, e.wire()})
	if err != nil { // cannot happen: every member is plain data
		panic(err)
	}
	return b
}
