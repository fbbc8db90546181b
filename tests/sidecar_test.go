package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	client "procmgr/clients/go"
)

// This file starts sidecars for tests, through the Go client or raw.

// callTimeout bounds any single call; it only prevents hangs.
const callTimeout = 30 * time.Second

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return ctx
}

// lockedBuffer collects a sidecar's stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// sidecar is a sidecar started through the Go client.
type sidecar struct {
	*client.Client
	t      *testing.T
	mark   string
	stderr *lockedBuffer
}

// sidecarEnv marks a sidecar (and its tools) for cleanup.
func sidecarEnv(mark string) []string {
	return append(os.Environ(), envSidecar+"="+mark)
}

// startSidecar starts the sidecar with args. Cleanup SIGKILLs it and then
// every process still carrying its marker or session, and fails the test if
// the sidecar wrote anything but JSON-RPC on stdout.
func startSidecar(t *testing.T, args ...string) *sidecar {
	t.Helper()
	return startSidecarOpts(t, client.Options{Args: args})
}

func startSidecarOpts(t *testing.T, opts client.Options) *sidecar {
	t.Helper()
	sc := &sidecar{t: t, mark: randomID(), stderr: &lockedBuffer{}}
	opts.Binary = binary
	if opts.Stderr == nil {
		opts.Stderr = sc.stderr
	}
	if opts.Env == nil {
		opts.Env = sidecarEnv(sc.mark)
	} else {
		opts.Env = append(append([]string{}, opts.Env...), envRun+"="+runID, envSidecar+"="+sc.mark)
	}
	c, err := client.Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("starting sidecar: %v", err)
	}
	execChildren.Store(c.Pid(), true)
	sc.Client = c
	t.Cleanup(func() {
		c.Kill()
		c.Wait()
		killMarked(envSidecar, sc.mark)
		if v := c.ProtocolViolations(); len(v) > 0 {
			t.Errorf("sidecar wrote non-protocol output on stdout:\n%s", strings.Join(v, "\n"))
		}
		if t.Failed() {
			t.Logf("sidecar %d stderr:\n%s", c.Pid(), tail(sc.stderr.String(), 6000))
		}
	})
	return sc
}

func (sc *sidecar) create(p client.CreateParams) client.ProcessInfo {
	sc.t.Helper()
	info, err := sc.Create(ctxT(sc.t), p)
	if err != nil {
		sc.t.Fatalf("create %q %q: %v", p.Tag, p.Argv, err)
	}
	if info.Pid <= 1 || info.Pgid <= 1 {
		sc.t.Fatalf("create %q returned pid %d pgid %d", p.Tag, info.Pid, info.Pgid)
	}
	return info
}

// rpcCode is the JSON-RPC error code of err, or 0 if err is not an RPC error.
func rpcCode(err error) int {
	var re *client.RPCError
	if errors.As(err, &re) {
		return re.Code
	}
	return 0
}

func wantCode(t *testing.T, what string, err error, code int) *client.RPCError {
	t.Helper()
	var re *client.RPCError
	if !errors.As(err, &re) {
		t.Errorf("%s: want error %d, got %v", what, code, err)
		return nil
	}
	if re.Code != code {
		t.Errorf("%s: want error %d, got %d %q (data %s)", what, code, re.Code, re.Message, re.Data)
	}
	return re
}

// sh builds the argv of a /bin/sh script. Core dumps are off so that a
// "crashing" tool leaves no file behind.
func sh(script string) []string {
	return []string{"/bin/sh", "-c", "ulimit -c 0; " + script}
}

// ---- raw JSON-RPC connection -------------------------------------------

// rawMsg is any message read from the sidecar.
type rawMsg struct {
	JSONRPC string           `json:"jsonrpc"`
	ID      json.RawMessage  `json:"id"`
	Method  string           `json:"method"`
	Params  json.RawMessage  `json:"params"`
	Result  json.RawMessage  `json:"result"`
	Error   *client.RPCError `json:"error"`
	raw     []byte
}

func (m rawMsg) String() string { return string(m.raw) }

// rawConn drives the sidecar with hand-written bytes, in line or header
// framing, and checks every frame it reads back.
type rawConn struct {
	t      *testing.T
	cmd    *exec.Cmd
	in     *os.File
	header bool
	msgs   chan rawMsg
	done   chan struct{}
	stderr *lockedBuffer

	stash []rawMsg // read, not yet taken
	all   []rawMsg // everything read

	mu  sync.Mutex
	bad []string
}

func startRaw(t *testing.T, header bool, args ...string) *rawConn {
	t.Helper()
	mark := randomID()
	if header {
		args = append([]string{"--framing=header"}, args...)
	}
	args = append([]string{"--parent-pid", strconv.Itoa(os.Getpid())}, args...)
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r := &rawConn{t: t, in: inW, header: header, msgs: make(chan rawMsg, 4096),
		done: make(chan struct{}), stderr: &lockedBuffer{}}
	r.cmd = exec.Command(binary, args...)
	r.cmd.Stdin, r.cmd.Stdout, r.cmd.Stderr = inR, outW, r.stderr
	r.cmd.Env = sidecarEnv(mark)
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	r.cmd.WaitDelay = 5 * time.Second
	err = r.cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	execChildren.Store(r.cmd.Process.Pid, true)
	go r.readLoop(outR)
	t.Cleanup(func() {
		r.cmd.Process.Kill()
		r.cmd.Wait()
		inW.Close()
		killMarked(envSidecar, mark) // before waiting for EOF: a leaked pipe would hold it
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Errorf("sidecar's stdout still open after it and its tools were killed")
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.bad) > 0 {
			t.Errorf("sidecar wrote malformed frames on stdout:\n%s", strings.Join(r.bad, "\n"))
		}
		if t.Failed() {
			t.Logf("sidecar stderr:\n%s", tail(r.stderr.String(), 6000))
		}
	})
	return r
}

func (r *rawConn) violation(format string, a ...any) {
	r.mu.Lock()
	r.bad = append(r.bad, fmt.Sprintf(format, a...))
	r.mu.Unlock()
}

func (r *rawConn) readLoop(out io.ReadCloser) {
	defer close(r.done)
	defer out.Close()
	br := bufio.NewReader(out)
	for {
		var body []byte
		if r.header {
			n := -1
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					if line != "" {
						r.violation("truncated header %q", line)
					}
					return
				}
				if !strings.HasSuffix(line, "\r\n") {
					r.violation("header line not CRLF-terminated: %q", line)
				}
				line = strings.TrimRight(line, "\r\n")
				if line == "" {
					break
				}
				k, v, ok := strings.Cut(line, ":")
				if !ok {
					r.violation("bad header line %q", line)
					continue
				}
				if strings.EqualFold(strings.TrimSpace(k), "Content-Length") {
					n, err = strconv.Atoi(strings.TrimSpace(v))
					if err != nil {
						r.violation("bad Content-Length %q", line)
					}
				}
			}
			if n < 0 {
				r.violation("frame without Content-Length")
				return
			}
			body = make([]byte, n)
			if _, err := io.ReadFull(br, body); err != nil {
				r.violation("short body: %v", err)
				return
			}
		} else {
			line, err := br.ReadBytes('\n')
			if err != nil {
				if len(line) > 0 {
					r.violation("unterminated last line %q", line)
				}
				return
			}
			body = line
		}
		var m rawMsg
		if err := json.Unmarshal(body, &m); err != nil {
			r.violation("frame is not a JSON object: %q", truncate(body))
			continue
		}
		m.raw = bytes.TrimSpace(body)
		if m.JSONRPC != "2.0" {
			r.violation(`frame lacks "jsonrpc":"2.0": %q`, truncate(body))
		}
		r.msgs <- m
	}
}

func truncate(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// frame wraps a message body in the connection's framing.
func (r *rawConn) frame(body string) []byte {
	if r.header {
		return []byte(fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body))
	}
	return []byte(body + "\n")
}

// send writes bytes as they are, in the background so a large write cannot
// block the test; it returns a channel with the write's error.
func (r *rawConn) send(b []byte) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := r.in.Write(b)
		ch <- err
	}()
	return ch
}

func (r *rawConn) sendWait(b []byte) {
	r.t.Helper()
	select {
	case err := <-r.send(b):
		if err != nil {
			r.t.Fatalf("writing to the sidecar: %v", err)
		}
	case <-time.After(callTimeout):
		r.t.Fatalf("writing %d bytes to the sidecar did not finish", len(b))
	}
}

func request(id any, method string, params any) string {
	m := map[string]any{"jsonrpc": "2.0", "id": id, "method": method}
	if params != nil {
		m["params"] = params
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// next reads the next message off the wire, failing the test after
// callTimeout. It records every message in all.
func (r *rawConn) next() rawMsg {
	r.t.Helper()
	var m rawMsg
	select {
	case m = <-r.msgs:
	case <-r.done:
		// drain what was read before EOF
		select {
		case m = <-r.msgs:
		default:
			r.t.Fatalf("sidecar closed its stdout")
		}
	case <-time.After(callTimeout):
		r.t.Fatalf("no message from the sidecar within %v", callTimeout)
	}
	r.all = append(r.all, m)
	return m
}

// take returns the first message, read earlier but not yet taken or read
// now, for which match is true. Messages read on the way are kept for later
// takes: replies may come in any order.
func (r *rawConn) take(match func(rawMsg) bool) rawMsg {
	r.t.Helper()
	for i, m := range r.stash {
		if match(m) {
			r.stash = append(r.stash[:i:i], r.stash[i+1:]...)
			return m
		}
	}
	for {
		m := r.next()
		if match(m) {
			return m
		}
		r.stash = append(r.stash, m)
	}
}

// within is until with its own deadline; ok is false if it passed.
func (r *rawConn) within(id string, d time.Duration) (m rawMsg, ok bool) {
	r.t.Helper()
	match := func(m rawMsg) bool { return m.Method == "" && string(m.ID) == id }
	for i, m := range r.stash {
		if match(m) {
			r.stash = append(r.stash[:i:i], r.stash[i+1:]...)
			return m, true
		}
	}
	end := time.After(d)
	for {
		select {
		case m = <-r.msgs:
			r.all = append(r.all, m)
			if match(m) {
				return m, true
			}
			r.stash = append(r.stash, m)
		case <-end:
			return rawMsg{}, false
		}
	}
}

// until takes the reply whose id is the JSON text id.
func (r *rawConn) until(id string) rawMsg {
	r.t.Helper()
	return r.take(func(m rawMsg) bool { return m.Method == "" && string(m.ID) == id })
}

// untaken are the replies (not notifications) read but never taken.
func (r *rawConn) untaken() []rawMsg {
	var out []rawMsg
	for _, m := range r.stash {
		if m.Method == "" {
			out = append(out, m)
		}
	}
	return out
}

// call sends a request with a numeric id and returns its reply.
func (r *rawConn) call(id int, method string, params any) rawMsg {
	r.t.Helper()
	r.sendWait(r.frame(request(id, method, params)))
	return r.until(strconv.Itoa(id))
}

// mustResult calls and fails the test unless the reply is a result; it
// decodes the result into out (if non-nil).
func (r *rawConn) mustResult(id int, method string, params, out any) {
	r.t.Helper()
	m := r.call(id, method, params)
	if m.Error != nil || m.Result == nil {
		r.t.Fatalf("%s: want a result, got %s", method, m)
	}
	if out != nil {
		if err := json.Unmarshal(m.Result, out); err != nil {
			r.t.Fatalf("%s: decoding result %s: %v", method, m.Result, err)
		}
	}
}

// Two shutdown calls in flight at once both get their reply and the sidecar
// exits 0: the second one's reply hook must not close what the first closed.
func TestTwoShutdownsAtOnceExitCleanly(t *testing.T) {
	t.Parallel()
	r := startRaw(t, false)
	r.sendWait(r.frame(`{"jsonrpc":"2.0","id":1,"method":"shutdown","params":{}}` + "\n" +
		`{"jsonrpc":"2.0","id":2,"method":"shutdown","params":{}}`))
	for _, id := range []string{"1", "2"} {
		if m := r.until(id); m.Error != nil {
			t.Errorf("shutdown %s: %s", id, m.Error)
		}
	}
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("sidecar after two shutdowns: %v (want exit status 0)", err)
		}
	case <-time.After(callTimeout):
		t.Fatalf("sidecar still running %v after two shutdowns", callTimeout)
	}
}
