package jsonrpc

import (
	"bufio"
	"bytes"
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

// errTooLarge reports a frame over the size limit. It is returned as soon
// as the size is known (before the body is read), so that the stream can
// answer at once; the next call to next skips the rest of the frame.
type errTooLarge struct{ size int64 } // -1: a line, its length unknown

func (e errTooLarge) Error() string { return "message too large" }

// errBadHeader reports a header block that could not be understood; the
// block (and the body it announced, if any) is skipped.
type errBadHeader struct{ reason string }

func (e errBadHeader) Error() string { return "bad header: " + e.reason }

// frameReader yields one frame at a time. A frame is valid only until the
// next call (it may point into the reader's buffer).
type frameReader interface {
	next() ([]byte, error)
}

// lineReader reads "\n"-terminated frames. The limit counts the line's bytes
// without its terminator ("\n" or "\r\n").
type lineReader struct {
	r        *bufio.Reader
	max      int
	skipping bool // the rest of an over-long line is still to be read through
	buf      []byte
}

func (l *lineReader) next() ([]byte, error) {
	for {
		if l.skipping {
			for {
				_, err := l.r.ReadSlice('\n')
				if err == bufio.ErrBufferFull {
					continue
				}
				if err != nil {
					return nil, err
				}
				break
			}
			l.skipping = false
		}
		line, err := l.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// Longer than the buffer: gather it, but never more than max+1
			// bytes (+1 for the "\r" of a "\r\n" still to come).
			l.buf = append(l.buf[:0], line...)
			for err == bufio.ErrBufferFull && len(l.buf) <= l.max+1 {
				line, err = l.r.ReadSlice('\n')
				l.buf = append(l.buf, line...)
			}
			if len(l.buf) > l.max+1 {
				l.buf = l.buf[:0]
				if err == bufio.ErrBufferFull {
					l.skipping = true
					return nil, errTooLarge{-1}
				}
				if err == nil || err == io.EOF {
					return nil, errTooLarge{-1} // the whole line is read already
				}
			}
			line = l.buf
		}
		if err != nil && err != bufio.ErrBufferFull {
			if err != io.EOF || len(line) == 0 {
				return nil, err
			}
			// A last line without "\n" is a frame too.
		}
		body := bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(body) > l.max {
			return nil, errTooLarge{int64(len(body))}
		}
		if body = bytes.TrimSpace(body); len(body) > 0 {
			return body, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// headerReader reads LSP-style frames. It resynchronises on a Content-Length
// header found after bytes that are not headers (a previous Content-Length
// shorter than its body leaves such bytes), instead of taking them as the
// start of a header block.
type headerReader struct {
	r       *bufio.Reader
	max     int
	skip    int64  // bytes of a skipped body still to read through
	pending string // a Content-Length line found by resynchronising
}

// maxHeaderLine bounds a header line; of a longer line only the last
// maxHeaderLine bytes are looked at (for a Content-Length to resync on).
const maxHeaderLine = 1024

const contentLength = "content-length:"

func (h *headerReader) next() ([]byte, error) {
	if h.skip > 0 {
		n := h.skip
		h.skip = 0
		if _, err := io.CopyN(io.Discard, h.r, n); err != nil {
			return nil, err
		}
	}
	length := int64(-1)
	bad := ""
	garbage := false // a line that is not a header was seen in this block
	started := false
	for {
		s := h.pending
		h.pending = ""
		if s == "" {
			line, long, err := h.readLine()
			if err != nil {
				return nil, err
			}
			s = strings.TrimRight(line, "\r\n")
			if long {
				garbage = true
			}
		}
		if s == "" {
			if !started {
				continue // blank lines between messages
			}
			break
		}
		if i := indexFold(s, contentLength); i > 0 || (i == 0 && garbage) {
			// A new header block starts here: what came before is skipped.
			h.pending = s[i:]
			return nil, errBadHeader{"bytes that are not a header were skipped up to the next Content-Length"}
		}
		started = true
		name, value, ok := strings.Cut(s, ":")
		if !ok || !isToken(name) {
			garbage = true
			bad = fmt.Sprintf("malformed header line %q", truncate(s, 80))
			continue
		}
		if strings.EqualFold(name, "Content-Length") {
			n, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
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
		if length > 0 { // keep in step: the body it announced is skipped
			h.skip = length
		}
		return nil, errBadHeader{bad}
	}
	if length > int64(h.max) {
		h.skip = length // read through on the next call, after the answer
		return nil, errTooLarge{length}
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(h.r, body); err != nil {
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		return nil, err
	}
	return body, nil
}

// readLine returns the next line; of a line longer than maxHeaderLine, only
// its end (long is then true).
func (h *headerReader) readLine() (line string, long bool, err error) {
	b, err := h.r.ReadSlice('\n')
	if err != bufio.ErrBufferFull && len(b) <= maxHeaderLine {
		return string(b), false, err
	}
	tail := append([]byte(nil), b...)
	for err == bufio.ErrBufferFull {
		b, err = h.r.ReadSlice('\n')
		tail = append(tail, b...)
		if len(tail) > 2*maxHeaderLine {
			tail = append(tail[:0], tail[len(tail)-maxHeaderLine:]...)
		}
	}
	if len(tail) > maxHeaderLine {
		tail = tail[len(tail)-maxHeaderLine:]
	}
	return string(tail), true, err
}

// indexFold is strings.Index, ASCII case-insensitively; needle is lower case.
func indexFold(s, needle string) int {
	for i := 0; i+len(needle) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(needle)], needle) {
			return i
		}
	}
	return -1
}

// isToken reports whether s is an HTTP header name (RFC 9110 token).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// frameWriter appends one frame to w.
type frameWriter func(w *bufio.Writer, body []byte)

func writeLine(w *bufio.Writer, body []byte) {
	w.Write(body)
	w.WriteByte('\n')
}

func writeHeader(w *bufio.Writer, body []byte) {
	w.WriteString("Content-Length: ")
	w.WriteString(strconv.Itoa(len(body)))
	w.WriteString("\r\n\r\n")
	w.Write(body)
}
