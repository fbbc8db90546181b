package jsonrpc

import (
	"encoding/json"
	"testing"
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
