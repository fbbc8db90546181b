package jsonrpc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"
)

type echoParams struct {
	Text  string `json:"text"`
	Count int    `json:"count"`
}

// serve runs a Server with an "echo", a "panic" and a "fail" (a plain error)
// method over in-memory pipes and returns a writer for input and a reader of
// reply lines.
func serve(t *testing.T, framing Framing, max int) (io.WriteCloser, *bufio.Reader) {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := NewServer(log, 0)
	Handle(s, "echo", func(_ context.Context, p echoParams) (echoParams, error) { return p, nil })
	Handle(s, "panic", func(context.Context, struct{}) (any, error) { panic("boom") })
	Handle(s, "fail", func(context.Context, struct{}) (any, error) { return nil, errors.New("disk on fire") })
	stream, err := NewStream(inR, outW, StreamConfig{Framing: framing, MaxMessage: max, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Serve(context.Background(), stream); close(done) }()
	t.Cleanup(func() {
		inW.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after EOF")
		}
		s.Close()
		outR.Close()
	})
	return inW, bufio.NewReader(outR)
}

type testReply struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    struct {
			Reason string `json:"reason"`
		} `json:"data"`
	} `json:"error"`
}

// reasons are the protocol's error.data.reason words of the codes this
// package answers with (docs/protocol.md, "Errors"), written out here rather
// than taken from DefaultReason, which is under test.
var reasons = map[int]string{
	CodeParseError:     "parse_error",
	CodeInvalidRequest: "invalid_request",
	CodeMethodNotFound: "method_not_found",
	CodeInvalidParams:  "invalid_params",
	CodeInternalError:  "internal_error",
	CodeServerBusy:     "server_busy",
}

func readReply(t *testing.T, r *bufio.Reader) testReply {
	t.Helper()
	type res struct {
		line string
		err  error
	}
	ch := make(chan res, 1)
	go func() { l, err := r.ReadString('\n'); ch <- res{l, err} }()
	select {
	case got := <-ch:
		if got.err != nil {
			t.Fatalf("read reply: %v", got.err)
		}
		var rep testReply
		if err := json.Unmarshal([]byte(got.line), &rep); err != nil {
			t.Fatalf("testReply %q is not JSON: %v", got.line, err)
		}
		return rep
	case <-time.After(5 * time.Second):
		t.Fatal("no testReply within 5 s")
	}
	return testReply{}
}

func TestBadInputIsAnsweredAndTheConnectionSurvives(t *testing.T) {
	cases := []struct {
		name, in string
		code     int
		id       string
	}{
		{"garbage", `this is not json`, CodeParseError, "null"},
		{"truncated object", `{"jsonrpc":"2.0","id":1,`, CodeParseError, "null"},
		{"batch", `[{"jsonrpc":"2.0","id":1,"method":"echo"}]`, CodeInvalidRequest, "null"},
		{"scalar", `42`, CodeInvalidRequest, "null"},
		{"no jsonrpc member", `{"id":7,"method":"echo"}`, CodeInvalidRequest, "7"},
		{"wrong jsonrpc version", `{"jsonrpc":"1.0","id":7,"method":"echo"}`, CodeInvalidRequest, "7"},
		{"method not a string", `{"jsonrpc":"2.0","id":7,"method":3}`, CodeInvalidRequest, "7"},
		{"null id", `{"jsonrpc":"2.0","id":null,"method":"echo"}`, CodeInvalidRequest, "null"},
		{"negative id", `{"jsonrpc":"2.0","id":-1,"method":"echo"}`, CodeInvalidRequest, "null"},
		{"fractional id", `{"jsonrpc":"2.0","id":1.5,"method":"echo"}`, CodeInvalidRequest, "null"},
		{"unknown member", `{"jsonrpc":"2.0","id":7,"method":"echo","extra":1}`, CodeInvalidRequest, "7"},
		{"array params", `{"jsonrpc":"2.0","id":7,"method":"echo","params":[1]}`, CodeInvalidParams, "7"},
		{"string params", `{"jsonrpc":"2.0","id":7,"method":"echo","params":"x"}`, CodeInvalidParams, "7"},
		{"unknown field", `{"jsonrpc":"2.0","id":7,"method":"echo","params":{"txt":"a"}}`, CodeInvalidParams, "7"},
		{"wrong type", `{"jsonrpc":"2.0","id":7,"method":"echo","params":{"count":"3"}}`, CodeInvalidParams, "7"},
		{"unknown method", `{"jsonrpc":"2.0","id":"s","method":"nope"}`, CodeMethodNotFound, `"s"`},
		{"handler panic", `{"jsonrpc":"2.0","id":8,"method":"panic"}`, CodeInternalError, "8"},
		{"handler plain error", `{"jsonrpc":"2.0","id":8,"method":"fail"}`, CodeInternalError, "8"},
	}
	w, r := serve(t, FramingLine, 4096)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			io.WriteString(w, c.in+"\n")
			rep := readReply(t, r)
			if rep.Error == nil || rep.Error.Code != c.code || string(rep.ID) != c.id || rep.Error.Data.Reason != reasons[c.code] {
				t.Fatalf("testReply %+v (error %+v), want code %d reason %q id %s", rep, rep.Error, c.code, reasons[c.code], c.id)
			}
			io.WriteString(w, `{"jsonrpc":"2.0","id":99,"method":"echo","params":{"text":"still here"}}`+"\n")
			if rep := readReply(t, r); rep.Error != nil || !strings.Contains(string(rep.Result), "still here") {
				t.Fatalf("connection did not survive %s: %+v", c.name, rep)
			}
		})
	}
}

// A method that panics or returns an error other than an *Error is answered
// -32603 with reason internal_error; a plain error keeps its message.
func TestPanicsAndPlainErrorsAreInternalErrors(t *testing.T) {
	w, r := serve(t, FramingLine, 4096)
	for _, c := range []struct{ method, says string }{{"panic", "boom"}, {"fail", "disk on fire"}} {
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"method":"`+c.method+`"}`+"\n")
		rep := readReply(t, r)
		if rep.Error == nil || rep.Error.Code != CodeInternalError || rep.Error.Data.Reason != "internal_error" ||
			!strings.Contains(rep.Error.Message, c.says) {
			t.Errorf("%s: error %+v, want -32603 with reason internal_error, saying %q", c.method, rep.Error, c.says)
		}
	}
}

func TestErrorsNameTheOffendingField(t *testing.T) {
	w, r := serve(t, FramingLine, 4096)
	io.WriteString(w, `{"jsonrpc":"2.0","id":1,"method":"echo","params":{"bogus":true}}`+"\n")
	if rep := readReply(t, r); rep.Error == nil || !strings.Contains(rep.Error.Message, `"bogus"`) {
		t.Fatalf("unknown field not named: %+v", rep.Error)
	}
	io.WriteString(w, `{"jsonrpc":"2.0","id":2,"method":"echo","params":{"count":"x"}}`+"\n")
	if rep := readReply(t, r); rep.Error == nil || !strings.Contains(rep.Error.Message, `"count"`) {
		t.Fatalf("mistyped field not named: %+v", rep.Error)
	}
}

func TestOverlongLineIsSkippedAndAnswered(t *testing.T) {
	w, r := serve(t, FramingLine, 1024)
	go func() {
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"method":"echo","params":{"text":"`+strings.Repeat("x", 1<<20)+`"}}`+"\n")
		io.WriteString(w, `{"jsonrpc":"2.0","id":2,"method":"echo","params":{"text":"after"}}`+"\n")
	}()
	if rep := readReply(t, r); rep.Error == nil || rep.Error.Code != CodeInvalidRequest || string(rep.ID) != "null" {
		t.Fatalf("over-long line: %+v", rep)
	}
	if rep := readReply(t, r); string(rep.ID) != "2" || !strings.Contains(string(rep.Result), "after") {
		t.Fatalf("next request after an over-long line: %+v", rep)
	}
}

func TestNotificationsGetNoReply(t *testing.T) {
	w, r := serve(t, FramingLine, 4096)
	io.WriteString(w, `{"jsonrpc":"2.0","method":"echo","params":{"text":"n"}}`+"\n")
	io.WriteString(w, `{"jsonrpc":"2.0","id":5,"method":"echo","params":{"text":"c"}}`+"\n")
	if rep := readReply(t, r); string(rep.ID) != "5" {
		t.Fatalf("first testReply is %+v, want the call's (id 5): notifications get no testReply", rep)
	}
}

func TestHeaderFraming(t *testing.T) {
	w, r := serve(t, FramingHeader, 4096)
	body := `{"jsonrpc":"2.0","id":1,"method":"echo","params":{"text":"hdr"}}`
	io.WriteString(w, "content-length: "+itoa(len(body))+"\r\nContent-Type: application/json\r\n\r\n"+body)
	hdr, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(hdr, "Content-Length: ") {
		t.Fatalf("testReply header %q, %v", hdr, err)
	}
	if blank, _ := r.ReadString('\n'); blank != "\r\n" {
		t.Fatalf("header block not ended by a blank line: %q", blank)
	}
	n := 0
	for _, c := range strings.TrimSpace(strings.TrimPrefix(hdr, "Content-Length: ")) {
		n = n*10 + int(c-'0')
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil || !strings.Contains(string(buf), "hdr") {
		t.Fatalf("testReply body %q, %v", buf, err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
