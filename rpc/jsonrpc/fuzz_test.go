package jsonrpc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sourcegraph/jsonrpc2"
)

// Fuzz targets (issue 12). The invariants: no panic; every frame the
// sidecar writes is valid UTF-8 JSON and a JSON-RPC 2.0 response (bad input
// is answered, never echoed raw); nothing is held beyond --max-message per
// frame. Seeds: the bad-input tables of the tests, plus testdata/fuzz.

const fuzzMax = 1024

// seeds are frames from the bad-input tests (stream_test.go,
// transport_test.go, tests/wire_test.go).
var seeds = []string{
	`{"jsonrpc":"2.0","id":1,"method":"echo","params":{"text":"hi","count":2}}`,
	`{"jsonrpc":"2.0","method":"echo","params":{"text":"n"}}`,
	`this is not json`,
	`{"jsonrpc":"2.0","id":1,`,
	`[{"jsonrpc":"2.0","id":1,"method":"echo"}]`,
	`42`, `null`, `{}`, `""`,
	`{"id":7,"method":"echo"}`,
	`{"jsonrpc":"1.0","id":7,"method":"echo"}`,
	`{"jsonrpc":"2.0","id":7,"method":3}`,
	`{"jsonrpc":"2.0","id":null,"method":"echo"}`,
	`{"jsonrpc":"2.0","id":-1,"method":"echo"}`,
	`{"jsonrpc":"2.0","id":1.5,"method":"echo"}`,
	`{"jsonrpc":"2.0","id":1e3,"method":"echo"}`,
	`{"jsonrpc":"2.0","id":{"a":1},"method":"echo"}`,
	`{"jsonrpc":"2.0","id":7,"method":"echo","extra":1}`,
	`{"jsonrpc":"2.0","id":7,"method":"echo","params":[1]}`,
	`{"jsonrpc":"2.0","id":7,"method":"echo","params":"x"}`,
	`{"jsonrpc":"2.0","id":7,"method":"echo","params":{"txt":"a"}}`,
	`{"jsonrpc":"2.0","id":7,"method":"echo","params":{"count":"3"}}`,
	`{"jsonrpc":"2.0","id":"s","method":"nope"}`,
	`{"jsonrpc":"2.0","id":8,"method":"panic"}`,
	`{"JSONRPC":"2.0","ID":7,"METHOD":"fetch","PARAMS":{"TAG":"x"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"echo","method":"echo"}`,
	`{"jsonrpc":"2.0","id":2,"method":"echo","params":{"text":"a","te\u0078t":"b"}}`,
	"{\"jsonrpc\":\"2.0\",\"id\":\"a\xffb\",\"method\":\"echo\"}",
	`{"jsonrpc":"2.0","id":"\udc00","method":"echo","params":{"text":"\ud800"}}`,
	`{"jsonrpc":"2.0","id":1,"result":true}`,
	`{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"nested","params":{"inner":{"NAME":"x"},"list":[{"key":"a"}]}}`,
	`{"jsonrpc":"2.0","id":1,"method":"echo","params":{"text":"` + strings.Repeat("x", fuzzMax) + `"}}`,
	` {"jsonrpc":"2.0","id":1,"method":"echo"}`,
}

// fuzzServe serves input in framing through a Server and returns what it
// wrote, once everything was answered.
func fuzzServe(t *testing.T, framing Framing, input []byte) []byte {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var out bytes.Buffer
	s := NewServer(log, 64<<10)
	Handle(s, "echo", func(_ context.Context, p echoParams) (echoParams, error) { return p, nil })
	HandleInline(s, "lookup", func(_ context.Context, p echoParams) (echoParams, error) { return p, nil })
	HandleInline(s, "nested", func(_ context.Context, p nested) (string, error) { return p.Inner.Name, nil })
	Handle(s, "panic", func(context.Context, struct{}) (any, error) { panic("boom") })
	stream, err := NewStream(bytes.NewReader(input), &out, StreamConfig{Framing: framing, MaxMessage: fuzzMax, Budget: 64 << 10, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Serve(context.Background(), stream); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return at the end of an in-memory input")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.Drain(ctx, stream)
	if ctx.Err() != nil {
		t.Fatal("replies not written within 30 s")
	}
	s.Close()
	return out.Bytes()
}

// checkReply fails unless body is one valid JSON-RPC 2.0 response.
func checkReply(t *testing.T, body []byte) {
	t.Helper()
	if !utf8.Valid(body) {
		t.Fatalf("a reply is not valid UTF-8: %q", body)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("a reply is not a JSON object: %q: %v", body, err)
	}
	if string(m["jsonrpc"]) != `"2.0"` {
		t.Fatalf(`a reply without "jsonrpc":"2.0": %q`, body)
	}
	_, res := m["result"]
	_, isErr := m["error"]
	if res == isErr {
		t.Fatalf("a reply needs exactly one of result and error: %q", body)
	}
	id, ok := m["id"]
	if !ok || (string(id) != "null" && parseID(id) == nil) {
		t.Fatalf("a reply with a bad id: %q", body)
	}
}

func addSeeds(f *testing.F, frame func(string) string) {
	for _, s := range seeds {
		f.Add([]byte(frame(s)))
	}
	all := ""
	for _, s := range seeds {
		all += frame(s)
	}
	f.Add([]byte(all))
}

func FuzzLineFraming(f *testing.F) {
	addSeeds(f, func(s string) string { return s + "\n" })
	f.Add([]byte("\r\n\n  \n" + strings.Repeat("y", 3*fuzzMax) + "\n{}\r\n"))
	f.Fuzz(func(t *testing.T, input []byte) {
		out := fuzzServe(t, FramingLine, input)
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			checkReply(t, sc.Bytes())
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		if len(out) > 0 && out[len(out)-1] != '\n' {
			t.Fatalf("output does not end with a newline: %q", out)
		}
	})
}

func FuzzHeaderFraming(f *testing.F) {
	addSeeds(f, func(s string) string { return fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(s), s) })
	f.Add([]byte("Content-Length: 1000000000000\r\n\r\n"))
	f.Add([]byte("Content-Length: 5\r\n\r\n{\"a\":1}\r\nContent-Length: 2\r\n\r\n{}"))
	f.Add([]byte("garbage\r\nContent-Type: x\r\n\r\nContent-Length: -1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, input []byte) {
		out := fuzzServe(t, FramingHeader, input)
		r := bufio.NewReader(bytes.NewReader(out))
		for {
			line, err := r.ReadString('\n')
			if err == io.EOF && line == "" {
				return
			}
			n, perr := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(line, "Content-Length: "), "\r\n"))
			if err != nil || perr != nil {
				t.Fatalf("bad header line written: %q", line)
			}
			if blank, _ := r.ReadString('\n'); blank != "\r\n" {
				t.Fatalf("header block not ended by CRLF: %q", blank)
			}
			body := make([]byte, n)
			if _, err := io.ReadFull(r, body); err != nil {
				t.Fatalf("short body: %v", err)
			}
			checkReply(t, body)
		}
	})
}

// FuzzCheckRequest: what checkRequest passes, jsonrpc2 must decode as a
// request (it would close the connection otherwise); what it refuses is
// answered with a valid reply.
func FuzzCheckRequest(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		frame = bytes.TrimSpace(frame)
		if len(frame) == 0 {
			return // the framers never hand over an empty frame
		}
		perr := checkRequest(frame)
		if perr != nil {
			if perr.code != 0 {
				checkReply(t, errorResponse(perr.id, &Error{Code: perr.code, Message: perr.msg}))
			}
			return
		}
		var env struct {
			Method *string `json:"method"`
		}
		if err := json.Unmarshal(frame, &env); err != nil || env.Method == nil {
			t.Fatalf("passed %q, which is not a request: %v", frame, err)
		}
		var req jsonrpcRequest
		if err := json.Unmarshal(frame, &req); err != nil {
			t.Fatalf("passed %q, which jsonrpc2 cannot decode: %v", frame, err)
		}
	})
}

// Representative params: every shape the protocol's params use.
type fuzzSeconds struct{ d float64 }

func (s *fuzzSeconds) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &s.d); err != nil {
		return fmt.Errorf("must be a number of seconds")
	}
	if s.d < 0 {
		return fmt.Errorf("must not be negative")
	}
	return nil
}

type fuzzParams struct {
	Tag     *string            `json:"tag"`
	Argv    []string           `json:"argv"`
	Env     map[string]*string `json:"env"`
	Count   int                `json:"count"`
	Flag    *bool              `json:"flag"`
	Timeout *fuzzSeconds       `json:"timeout"`
	Ready   *struct {
		Output *string           `json:"output"`
		Wait   *fuzzSeconds      `json:"timeout"`
		Steps  []struct{ N int } `json:"steps"`
	} `json:"ready"`
}

func FuzzDecodeParams(f *testing.F) {
	for _, s := range []string{`{}`, `null`, ``, `{"tag":"x"}`, `{"TAG":"x"}`, `{"tag":1}`,
		`{"argv":["a",1]}`, `{"env":{"A":null,"B":"b"}}`, `{"timeout":-1}`, `{"timeout":"x"}`,
		`{"ready":{"output":"x","timeout":2,"steps":[{"N":1},{"n":2}]}}`, `{"ready":{"OUTPUT":"x"}}`,
		`{"count":1e400}`, `{"tag":"a","tag":"b"}`, `[1]`, `"x"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var p fuzzParams
		err := decodeParams(raw, &p)
		if err == nil {
			return
		}
		if err.Code != CodeInvalidParams {
			t.Fatalf("params %q: code %d, want %d", raw, err.Code, CodeInvalidParams)
		}
		checkReply(t, errorResponse(nil, err))
	})
}

// jsonrpcRequest is jsonrpc2.Request, decoded as its Conn decodes requests.
type jsonrpcRequest = jsonrpc2.Request
