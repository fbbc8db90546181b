// Package jsonrpc serves JSON-RPC 2.0 over a byte stream (the sidecar's stdin and
// stdout) through github.com/sourcegraph/jsonrpc2. It knows nothing of
// processes: callers register typed methods.
//
// jsonrpc2's Conn does the protocol: it reads requests from an ObjectStream,
// calls a Handler, and writes replies (Conn.Reply, Conn.ReplyWithError) and
// notifications (Conn.Notify). What it lacks for a sidecar whose session must
// survive any input is added here, each piece a thin layer around it:
//
//   - Stream, the ObjectStream (stream.go, framing.go, check.go, outbox.go).
//     jsonrpc2 closes the connection on any frame it cannot decode and
//     decodes leniently what it can (member names in any letter case, a null
//     id as a notification, extra members); Stream validates every frame
//     first and answers a bad one itself (-32700, -32600, -32602), so no
//     input ends the session. It frames lines or Content-Length headers with
//     an exact --max-message (an over-long frame is answered as soon as its
//     size is known and skipped, never held whole), and resynchronises on the
//     next Content-Length after bytes that are not headers. jsonrpc2 writes
//     on the goroutine that replies, under one lock; Stream queues frames in
//     an outbox bounded in bytes and written by a goroutine of its own, so a
//     host that does not read stdout never stops the reader (until the
//     budget is spent; then writes wait, and a hang-up of the input is still
//     noticed). jsonrpc2 refuses to send once its Conn is closed, which it
//     does at the end of the input; Stream reports the end (Ended) without
//     closing the Conn, so replies and notifications still owed go out.
//   - Server, the Handler (server.go, params.go). jsonrpc2 hands raw params
//     to a Handler and leaves concurrency to it (a plain Handler runs on the
//     reading goroutine; AsyncHandler runs everything on goroutines, unbounded
//     and unordered). Server decodes params strictly into typed structs
//     (-32602 naming the field; names are case-sensitive, which
//     encoding/json alone is not), recovers panics (-32603), answers lookups
//     in order on the reading goroutine, and runs every other call on a
//     goroutine of its own within a bound (-32000 past it; long waits have
//     their own bound, so they never take the room of stop or shutdown), with
//     the request bytes held by calls in progress bounded too. A method may
//     take a first step in input order on the reading goroutine before its
//     call goes off it, undone if the call is refused (HandleOrdered).
//   - Notifications are queued (bounded in bytes, in groups that are kept or
//     dropped whole) and handed to Conn.Notify by one goroutine, so the code
//     that emits them never blocks; they are dropped only when the peer has
//     left the budget unread.
//
// The cost of the library is its decoding: Conn decodes each request again
// after Stream validated it (a message probe and a map of interfaces, params
// re-encoded); bench/micro splits a call's time into its parts.
package jsonrpc
