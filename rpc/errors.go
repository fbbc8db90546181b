package rpc

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
	Data    any // encoded as error.data when non-nil
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%d)", e.Message, e.Code) }

// Errorf builds an *Error.
func Errorf(code int64, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// wire is the error as jsonrpc2 sends it. Data that cannot be encoded is
// left out rather than losing the error.
func (e *Error) wire() *jsonrpc2.Error {
	w := &jsonrpc2.Error{Code: e.Code, Message: e.Message}
	if e.Data != nil {
		if b, err := json.Marshal(e.Data); err == nil {
			w.Data = (*json.RawMessage)(&b)
		}
	}
	return w
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
