package rpc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Framing names how messages are delimited on the stream.
type Framing string

const (
	// FramingLine: one JSON text per line, UTF-8, terminated by "\n".
	FramingLine Framing = "line"
	// FramingHeader: "Content-Length: N\r\n\r\n" then N bytes (LSP style).
	// Header names are matched case-insensitively; other headers are ignored.
	FramingHeader Framing = "header"
)

// errFrameTooLarge reports a frame over the size limit; it was skipped
// and the stream is positioned at the next frame.
var errFrameTooLarge = errors.New("message too large")

// errBadHeader reports a header block that could not be understood; the
// block was consumed and the stream is positioned after it.
type errBadHeader struct{ reason string }

func (e errBadHeader) Error() string { return "bad header: " + e.reason }

// frameReader yields one frame at a time.
type frameReader interface {
	next() ([]byte, error)
}

type lineReader struct {
	r   *bufio.Reader
	max int
}

// next returns the next non-blank line without its terminator. A line longer
// than max is read through in chunks and dropped: it never sits in memory whole.
func (l *lineReader) next() ([]byte, error) {
	for {
		var line []byte
		tooLong := false
		for {
			chunk, err := l.r.ReadSlice('\n')
			if !tooLong {
				if len(line)+len(chunk) > l.max+2 { // +2: the terminator, CRLF at most
					tooLong, line = true, nil
				} else {
					line = append(line, chunk...)
				}
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil {
				if err == io.EOF && len(line) > 0 && !tooLong {
					return bytes.TrimSpace(line), nil // a last line without "\n"
				}
				return nil, err
			}
			break
		}
		if tooLong {
			return nil, errFrameTooLarge
		}
		line = bytes.TrimSpace(line)
		if len(line) > 0 {
			return line, nil
		}
	}
}

type headerReader struct {
	r   *bufio.Reader
	max int
}

const maxHeaderLine = 1024

func (h *headerReader) next() ([]byte, error) {
	length := -1
	var bad string
	sawHeader := false
	for {
		line, err := h.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull || len(line) > maxHeaderLine {
			// Skip the rest of an absurd header line.
			for err == bufio.ErrBufferFull {
				_, err = h.r.ReadSlice('\n')
			}
			bad = "header line too long"
		}
		if err != nil {
			return nil, err
		}
		s := strings.TrimRight(string(line), "\r\n")
		if s == "" {
			if !sawHeader {
				continue // stray blank line between messages
			}
			break
		}
		sawHeader = true
		name, value, ok := strings.Cut(s, ":")
		if !ok {
			bad = fmt.Sprintf("malformed header line %q", truncate(s, 80))
			continue
		}
		if strings.EqualFold(strings.TrimSpace(name), "Content-Length") {
			n, err := strconv.Atoi(strings.TrimSpace(value))
			if err != nil || n < 0 {
				bad = fmt.Sprintf("invalid Content-Length %q", truncate(strings.TrimSpace(value), 40))
				continue
			}
			length = n
		}
	}
	if length < 0 && bad == "" {
		bad = "missing Content-Length"
	}
	if bad != "" {
		if length > 0 { // keep the stream in step: drop the body it announced
			if _, err := io.CopyN(io.Discard, h.r, int64(length)); err != nil {
				return nil, err
			}
		}
		return nil, errBadHeader{bad}
	}
	if length > h.max {
		if _, err := io.CopyN(io.Discard, h.r, int64(length)); err != nil {
			return nil, err
		}
		return nil, errFrameTooLarge
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(h.r, body); err != nil {
		return nil, err
	}
	return body, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// frameWriter writes one frame; the caller serialises calls.
type frameWriter func(w *bufio.Writer, body []byte) error

func writeLine(w *bufio.Writer, body []byte) error {
	w.Write(body)
	w.WriteByte('\n')
	return w.Flush()
}

func writeHeader(w *bufio.Writer, body []byte) error {
	fmt.Fprintf(w, "Content-Length: %d\r\n\r\n", len(body))
	w.Write(body)
	return w.Flush()
}
