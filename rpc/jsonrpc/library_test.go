package jsonrpc

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/sourcegraph/jsonrpc2"
)

// The jsonrpc2 behaviours this package covers (see doc.go), shown on the library
// alone, so that a change in a later version is noticed.

var testLog = slog.New(slog.NewTextHandler(io.Discard, nil))

type pipeRWC struct {
	io.Reader
	io.Writer
}

func (pipeRWC) Close() error { return nil }

// Covered by Stream answering bad frames itself (checkRequest).
func TestJSONRPC2ClosesItsConnOnAnUndecodableMessage(t *testing.T) {
	inR, inW := io.Pipe()
	conn := jsonrpc2.NewConn(context.Background(), jsonrpc2.NewPlainObjectStream(pipeRWC{inR, io.Discard}),
		jsonrpc2.HandlerWithError(func(context.Context, *jsonrpc2.Conn, *jsonrpc2.Request) (any, error) { return nil, nil }),
		jsonrpc2.SetLogger(slogLogger{testLog}))
	defer conn.Close()
	go io.WriteString(inW, `{"jsonrpc":"2.0","id":1,"METHOD":"x"}`+"\n")
	select {
	case <-conn.DisconnectNotify():
	case <-time.After(10 * time.Second):
		t.Fatal("jsonrpc2 kept its Conn open after a message it cannot decode: Stream's check may be relaxed")
	}
}

// Covered by Stream reporting the input's end through Ended instead of
// returning it to the Conn.
func TestJSONRPC2RefusesToReplyOnAClosedConn(t *testing.T) {
	conn := jsonrpc2.NewConn(context.Background(), jsonrpc2.NewPlainObjectStream(pipeRWC{eofReader{}, io.Discard}), nil,
		jsonrpc2.SetLogger(slogLogger{testLog}))
	<-conn.DisconnectNotify() // EOF closes it
	if err := conn.Reply(context.Background(), jsonrpc2.ID{Num: 1}, true); !errors.Is(err, jsonrpc2.ErrClosed) {
		t.Fatalf("Reply on a Conn closed by EOF: %v, want ErrClosed", err)
	}
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// Covered by checkRequest refusing a null id (-32600) and member names in
// another letter case.
func TestJSONRPC2DecodesLeniently(t *testing.T) {
	var r jsonrpc2.Request
	if err := json.Unmarshal([]byte(`{"jsonrpc":"2.0","id":null,"method":"x"}`), &r); err != nil || !r.Notif {
		t.Fatalf("a null id: %+v %v; jsonrpc2 took it as a notification", r, err)
	}
	r = jsonrpc2.Request{}
	if err := json.Unmarshal([]byte(`{"jsonrpc":"2.0","id":1,"method":"x","extra":1}`), &r); err != nil || len(r.ExtraFields) != 1 {
		t.Fatalf("an extra member: %+v %v; jsonrpc2 kept it", r, err)
	}
}
