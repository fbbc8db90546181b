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
	// CodeServerBusy: MaxConcurrentCalls calls are in progress; this one was
	// not run (a JSON-RPC "server error" code).
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

func (e *Error) wire() *jsonrpc2.Error {
	we := &jsonrpc2.Error{Code: e.Code, Message: e.Message}
	if e.Data != nil {
		if b, err := json.Marshal(e.Data); err == nil {
			raw := json.RawMessage(b)
			we.Data = &raw
		}
	}
	return we
}
