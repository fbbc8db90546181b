// Command echo is the floor the benchmarks compare the sidecar against: a Go
// program that reads one line from stdin and writes the same line back to
// stdout, with nothing in between. Driven by the same Python code over the
// same kind of pipe, the difference between it and procmgr is what the
// sidecar itself costs.
//
// It accepts (and ignores) the flags the Python client passes to procmgr, so
// the client's own transport can drive it unchanged. The first request, if it
// is "hello", gets a canned procmgr-style hello reply so that the client's
// start-up check passes; every later line is echoed verbatim, which the
// client reads as a reply with a null result.
//
// The bench builds it into a temporary directory; it is not part of procmgr.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// The flags procmgr takes, so that a client built for procmgr can start
	// this program in its place.
	flag.Int("parent-pid", 0, "ignored")
	flag.Int("stdout-fd", -1, "ignored")
	flag.Int("stderr-fd", -1, "ignored")
	flag.String("log-file", "", "ignored")
	flag.String("temp-dir", "", "ignored")
	flag.String("log-level", "", "ignored")
	flag.String("framing", "line", "ignored (always line)")
	flag.Float64("stop-timeout", 0, "ignored")
	flag.Parse()
	signal.Ignore(syscall.SIGPIPE)

	in := bufio.NewReaderSize(os.Stdin, 64*1024)
	out := os.Stdout
	first := true
	for {
		line, err := in.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than the buffer: copy it through in pieces.
			out.Write(line)
			continue
		}
		if len(line) == 0 && err != nil {
			if err != io.EOF {
				fmt.Fprintln(os.Stderr, "echo:", err)
				os.Exit(1)
			}
			return
		}
		if first {
			first = false
			if reply, ok := helloReply(line); ok {
				line = reply
			}
		}
		if _, werr := out.Write(line); werr != nil {
			return
		}
		if err != nil {
			return
		}
	}
}

// helloReply answers a "hello" request with a procmgr-shaped result, so a
// procmgr client accepts this program. Only the first line is checked.
func helloReply(line []byte) ([]byte, bool) {
	if !bytes.Contains(line, []byte(`"method":"hello"`)) {
		return nil, false
	}
	i := bytes.Index(line, []byte(`"id":`))
	if i < 0 {
		return nil, false
	}
	rest := line[i+5:]
	j := bytes.IndexAny(rest, ",}")
	if j < 0 {
		return nil, false
	}
	id := bytes.TrimSpace(rest[:j])
	return []byte(fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"name":"echo","version":"floor","protocol":1,"pid":%d,"features":[]}}`+"\n", id, os.Getpid())), true
}
