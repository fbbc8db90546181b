package rpc

import (
	"context"
	"encoding/base64"
	"strings"
	"time"
	"unicode/utf8"

	"procmgr/manager"
	"procmgr/rpc/jsonrpc"
)

type readOutputParams struct {
	Tag      *string  `json:"tag"`
	Stream   string   `json:"stream"` // "stdout" (default) or "stderr"
	Offset   *int64   `json:"offset"` // default: the oldest byte kept
	MaxBytes int      `json:"max_bytes"`
	Wait     *seconds `json:"wait"`
	Encoding string   `json:"encoding"` // "text" (default) or "base64"
}

// WaitsLong: a read_output with wait may long-poll (jsonrpc.LongWaiter).
func (p readOutputParams) WaitsLong() bool { return p.Wait != nil && p.Wait.d > 0 }

type readOutputResult struct {
	Data     string `json:"data"`
	Offset   int64  `json:"offset"`
	Overflow bool   `json:"overflow"`
	EOF      bool   `json:"eof"`
}

func (s *service) readOutput(ctx context.Context, p readOutputParams) (readOutputResult, error) {
	tag, err := tagParams{p.Tag}.tag()
	if err != nil {
		return readOutputResult{}, err
	}
	if p.Stream == "" {
		p.Stream = "stdout"
	}
	if p.Encoding != "" && p.Encoding != "text" && p.Encoding != "base64" {
		return readOutputResult{}, jsonrpc.Errorf(jsonrpc.CodeInvalidParams, `invalid params: encoding must be "text" or "base64", not %q`, p.Encoding)
	}
	if p.MaxBytes < 0 {
		return readOutputResult{}, jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "invalid params: max_bytes must not be negative")
	}
	if p.MaxBytes == 0 {
		p.MaxBytes = manager.DefaultReadBytes
	}
	offset := int64(-1)
	if p.Offset != nil {
		if *p.Offset < 0 {
			return readOutputResult{}, jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "invalid params: offset must not be negative")
		}
		offset = *p.Offset
	}
	var wait time.Duration
	if p.Wait != nil {
		wait = p.Wait.d
	}
	deadline := time.Now().Add(wait)
	for {
		ch, err := s.m.ReadOutput(ctx, tag, p.Stream, offset, p.MaxBytes, time.Until(deadline))
		if err != nil {
			return readOutputResult{}, toRPCError(err, tag)
		}
		data := ch.Data
		if p.Encoding == "base64" {
			return readOutputResult{base64.StdEncoding.EncodeToString(data), ch.Start + int64(len(data)), ch.Overflow, ch.EOF}, nil
		}
		// Never split a character across reads: hold back an incomplete
		// sequence at the end until the rest arrives (or the stream ends).
		if !ch.EOF {
			data = data[:completeUTF8(data)]
		}
		next := ch.Start + int64(len(data))
		if len(data) == 0 && len(ch.Data) > 0 && time.Until(deadline) > 0 {
			// Only part of a character so far: wait for more beyond it.
			if err := s.m.WaitOutput(ctx, tag, p.Stream, ch.Start+int64(len(ch.Data)), time.Until(deadline)); err != nil {
				return readOutputResult{}, toRPCError(err, tag)
			}
			offset, wait = ch.Start, 0
			if time.Until(deadline) > 0 {
				continue
			}
		}
		return readOutputResult{strings.ToValidUTF8(string(data), "\uFFFD"), next, ch.Overflow, ch.EOF && len(data) == len(ch.Data)}, nil
	}
}

// completeUTF8 is the length of b without a trailing incomplete UTF-8
// sequence.
func completeUTF8(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax+1; i-- {
		if utf8.RuneStart(b[i]) {
			if utf8.FullRune(b[i:]) {
				return len(b)
			}
			return i
		}
	}
	return len(b)
}

type writeStdinParams struct {
	Tag        *string `json:"tag"`
	Data       *string `json:"data"`
	DataBase64 *string `json:"data_base64"`
	EOF        bool    `json:"eof"`
}

type writeStdinResult struct {
	Written int `json:"written"`
}

func (s *service) writeStdin(_ context.Context, p writeStdinParams) (writeStdinResult, error) {
	tag, err := tagParams{p.Tag}.tag()
	if err != nil {
		return writeStdinResult{}, err
	}
	var data []byte
	switch {
	case p.Data != nil && p.DataBase64 != nil:
		return writeStdinResult{}, jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "invalid params: give data or data_base64, not both")
	case p.Data != nil:
		data = []byte(*p.Data)
	case p.DataBase64 != nil:
		if data, err = base64.StdEncoding.DecodeString(*p.DataBase64); err != nil {
			return writeStdinResult{}, jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "invalid params: data_base64: %v", err)
		}
	}
	n, err := s.m.WriteStdin(tag, data, p.EOF)
	if err != nil {
		return writeStdinResult{Written: n}, toRPCError(err, tag)
	}
	return writeStdinResult{Written: n}, nil
}
