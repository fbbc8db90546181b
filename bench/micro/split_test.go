//go:build linux

package micro

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"testing"

	"github.com/sourcegraph/jsonrpc2"

	"procmgr/rpc"
	"procmgr/rpc/jsonrpc"
)

// --- where one call's time goes, in process -----------------------------------
//
// Each benchmark below runs b.N requests through more of the stack than the
// one before, from an in-memory input to io.Discard (no pipes, no peer), so
// that the differences split one call's cost:
//
//	stream    = SplitStream                  framing and validation (jsonrpc.Stream)
//	jsonrpc2  = SplitJSONRPC2                jsonrpc2's Conn decoding a request, its read loop
//	dispatch  = SplitDispatch - stream - jsonrpc2   jsonrpc's Handler reaching a method
//	params    = SplitParams - SplitDispatch  strict decoding of {"tag": ...}
//	method    = SplitMethod - SplitParams    the `running` lookup itself (rpc, manager)
//	reply     = SplitReply - SplitMethod     Conn.Reply: encoding, the outbox, the write
//
// Requests without an id (notifications) are served but not answered, which
// is how the first five leave the reply out.

func frames(n int, frame string) []byte {
	return bytes.Repeat([]byte(frame+"\n"), n)
}

const (
	nopNotif     = `{"jsonrpc":"2.0","method":"nop"}`
	taggedNotif  = `{"jsonrpc":"2.0","method":"tagged","params":{"tag":"nope"}}`
	runningNotif = `{"jsonrpc":"2.0","method":"running","params":{"tag":"nope"}}`
	runningCall  = `{"jsonrpc":"2.0","id":7,"method":"running","params":{"tag":"nope"}}`
)

// The stream alone: frames read and validated, decoded into a RawMessage.
func BenchmarkSplitStream(b *testing.B) {
	in := frames(b.N, runningCall)
	s, err := jsonrpc.NewStream(bytes.NewReader(in), io.Discard, jsonrpc.StreamConfig{MaxMessage: 16 << 20, Log: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var raw json.RawMessage
		if err := s.ReadObject(&raw); err != nil {
			b.Fatal(err)
		}
	}
}

// rawStream hands the same frame to a Conn n times, as a validated stream would.
type rawStream struct {
	frame []byte
	n     int
	done  chan struct{}
}

func (r *rawStream) ReadObject(v any) error {
	if r.n == 0 {
		close(r.done)
		<-make(chan struct{}) // until the Conn is closed (never, in a benchmark)
	}
	r.n--
	return json.Unmarshal(r.frame, v)
}
func (r *rawStream) WriteObject(any) error { return nil }
func (r *rawStream) Close() error          { return nil }

type nopHandler struct{}

func (nopHandler) Handle(context.Context, *jsonrpc2.Conn, *jsonrpc2.Request) {}

// jsonrpc2's Conn decoding each request (its message probe, then
// Request.UnmarshalJSON through a map of interfaces) and its read loop.
func BenchmarkSplitJSONRPC2(b *testing.B) {
	rs := &rawStream{frame: []byte(runningCall), n: b.N, done: make(chan struct{})}
	b.ResetTimer()
	jsonrpc2.NewConn(context.Background(), rs, nopHandler{})
	<-rs.done
}

// serveAll serves in through a Server with rpc's methods and two of its own,
// and returns once every request was handled and every reply written.
func serveAll(b *testing.B, in []byte) {
	b.Helper()
	srv := jsonrpc.NewServer(quiet, 0)
	jsonrpc.HandleInline(srv, "nop", func(context.Context, struct{}) (any, error) { return nil, nil })
	jsonrpc.HandleInline(srv, "tagged", func(_ context.Context, p struct {
		Tag *string `json:"tag"`
	}) (any, error) {
		return nil, nil
	})
	rpc.Register(srv, newManager(b), rpc.Options{Version: "micro"})
	s, err := jsonrpc.NewStream(bytes.NewReader(in), io.Discard, jsonrpc.StreamConfig{MaxMessage: 16 << 20, Log: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	srv.Serve(context.Background(), s) // returns at the input's end
	srv.Drain(context.Background(), s)
	b.StopTimer()
	srv.Close()
}

// + rpc's Handler dispatching to an inline method without params.
func BenchmarkSplitDispatch(b *testing.B) { serveAll(b, frames(b.N, nopNotif)) }

// + strict params decoding ({"tag": ...}).
func BenchmarkSplitParams(b *testing.B) { serveAll(b, frames(b.N, taggedNotif)) }

// + the `running` method itself.
func BenchmarkSplitMethod(b *testing.B) { serveAll(b, frames(b.N, runningNotif)) }

// + the reply: the whole call, in process.
func BenchmarkSplitReply(b *testing.B) { serveAll(b, frames(b.N, runningCall)) }

const listCall = `{"jsonrpc":"2.0","id":8,"method":"list"}`

// `list` with no tools, the whole call in process: beside SplitReply, what
// the way a call is served (on the reading goroutine or one of its own) costs.
func BenchmarkSplitList(b *testing.B) { serveAll(b, frames(b.N, listCall)) }
