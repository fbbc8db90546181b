package rpc

import (
	"encoding/json"
	"fmt"
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

// marshal encodes the error object of a response.
func (e *Error) marshal() []byte {
	b, err := json.Marshal(struct {
		Code    int64  `json:"code"`
		Message string `json:"message"`
		Data    any    `json:"data,omitempty"`
	}{e.Code, e.Message, e.Data})
	if err != nil { // Data that cannot be encoded: send the error without it
		b, _ = json.Marshal(struct {
			Code    int64  `json:"code"`
			Message string `json:"message"`
		}{e.Code, e.Message})
	}
	return b
}
