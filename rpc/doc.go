// Package rpc serves JSON-RPC 2.0 over a byte stream (the sidecar's stdin and
// stdout). It knows nothing of processes: callers register typed methods.
//
// Layers, each aware only of the one below:
//   - framing: one JSON text per line (default) or LSP-style Content-Length
//     headers; an over-long frame is skipped without being buffered whole.
//   - Stream: validates every frame in one decoding pass and answers a bad one
//     itself (-32700, -32600), so no input can end the connection — and with
//     it the session.
//   - Server: dispatch to registered methods, strict params decoding
//     (-32602 naming the field), lookups served in order on the reading
//     goroutine and everything else concurrently with a bound, recovered
//     panics (-32603), replies encoded once, and notifications through a
//     bounded queue that never blocks the caller.
//
// It started on sourcegraph/jsonrpc2 behind a validating ObjectStream; once
// the stream validated and split every request, the library's Conn only
// decoded each message again (a third of the CPU of a call), so the read loop
// became this package's own.
package rpc
