package jsonrpc

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// The error path of params decoding: an unknown field, named in the -32602.
func BenchmarkDecodeParamsUnknownField(b *testing.B) {
	raw := json.RawMessage(`{"tag":"a","timeout":1,"frobnicate":1}`)
	for i := 0; i < b.N; i++ {
		var p struct {
			Tag     *string  `json:"tag"`
			Timeout *float64 `json:"timeout"`
		}
		if decodeParams(raw, &p) == nil {
			b.Fatal("an unknown field was accepted")
		}
	}
}

// Drain waiting 5 ms for a call in progress to end.
func BenchmarkDrainWaitingForACall(b *testing.B) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	stream, err := NewStream(strings.NewReader(""), io.Discard, StreamConfig{MaxMessage: 1 << 20, Log: log})
	if err != nil {
		b.Fatal(err)
	}
	srv := NewServer(log, 0)
	for i := 0; i < b.N; i++ {
		srv.inflight.Add(1)
		time.AfterFunc(5*time.Millisecond, func() { srv.inflight.Add(-1) })
		srv.Drain(context.Background(), stream)
	}
}
