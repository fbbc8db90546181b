// Package rpc serves JSON-RPC 2.0 over a byte stream (the sidecar's stdin and
// stdout). It knows nothing of processes: callers register typed methods.
//
// Layers, each aware only of the one below:
//   - framing: one JSON text per line (default) or LSP-style Content-Length
//     headers; an over-long frame is skipped without being buffered whole.
//   - Stream: a jsonrpc2.ObjectStream that validates every frame and answers a
//     bad one itself (-32700, -32600) instead of letting sourcegraph/jsonrpc2
//     close the connection, which would end the session.
//   - Server: dispatch to registered methods, strict params decoding
//     (-32602 naming the field), concurrent calls with a bound, recovered
//     panics (-32603), and notifications through a bounded queue that never
//     blocks the caller.
package rpc
