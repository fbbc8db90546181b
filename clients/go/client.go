// Package client is a small Go client for the procmgr sidecar.
//
// It spawns the sidecar as a child process and speaks the sidecar's JSON-RPC 2.0
// line protocol (one JSON object per line on the child's stdin/stdout) through a
// github.com/sourcegraph/jsonrpc2 Conn: Call for methods, the Conn's handler for
// notifications, a context for deadlines. Its line stream also checks the
// sidecar's wire format on the way in: anything on the sidecar's stdout that is
// not a valid JSON-RPC response or notification is recorded (ProtocolViolations)
// and skipped, instead of closing the connection as jsonrpc2 would.
//
// The protocol itself is described in docs/protocol.md at the repository root.
package client

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
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sourcegraph/jsonrpc2"
)

// ErrSidecarGone is returned by Call for every pending and later call once the
// sidecar's stdout has reached EOF (the sidecar exited or closed its output).
var ErrSidecarGone = errors.New("procmgr: sidecar gone")

// DefaultNotificationBuffer is the capacity of the Notifications channel when
// Options.NotificationBuffer is zero.
const DefaultNotificationBuffer = 256

// Options configure Start.
type Options struct {
	// Binary is the path of the procmgr executable.
	Binary string
	// Args are extra command-line arguments for the sidecar. Unless they name
	// --parent-pid, Start prepends "--parent-pid <our pid>".
	Args []string
	// Stderr receives the sidecar's stderr (its logs and, by default, the
	// output of tools created with "inherit"). Nil means /dev/null.
	Stderr io.Writer
	// ExtraFiles are passed to the sidecar as fds 3, 4, ... (3+index), e.g. to
	// be named by --stdout-fd / --stderr-fd.
	ExtraFiles []*os.File
	// Env is the sidecar's environment; nil means this process's environment.
	Env []string
	// NotificationBuffer is the capacity of the Notifications channel
	// (DefaultNotificationBuffer if zero).
	NotificationBuffer int
}

// Notification is a message from the sidecar without an id, e.g. "exited".
type Notification struct {
	Method string
	Params json.RawMessage
}

// RPCError is a JSON-RPC error reply. Branch on Code and Reason, never on
// Message, which is written for people and may change.
type RPCError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// Reason is error.data.reason: one stable snake_case word per case (the
// Reason* constants), or "" when the data carries none.
func (e *RPCError) Reason() string {
	var d struct {
		Reason string `json:"reason"`
	}
	json.Unmarshal(e.Data, &d) // data that is no object has no reason
	return d.Reason
}

func (e *RPCError) Error() string {
	if len(e.Data) > 0 {
		return fmt.Sprintf("procmgr: rpc error %d: %s (data %s)", e.Code, e.Message, e.Data)
	}
	return fmt.Sprintf("procmgr: rpc error %d: %s", e.Code, e.Message)
}

// Error codes of the procmgr protocol (docs/protocol.md, "Errors").
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
	CodeServerBusy     = -32000 // the call was not run: too many in progress; retry
	CodeTagInUse       = -32001
	CodeNoSuchTag      = -32002
	CodeSpawnFailed    = -32003
	CodeShuttingDown   = -32004
	CodeNotReady       = -32005 // the tool was stopped and the tag is free
)

// Reasons of the protocol's errors (RPCError.Reason). Each code has one,
// except -32602, -32003 and -32005, which tell their cases apart.
const (
	ReasonParseError      = "parse_error"      // -32700
	ReasonInvalidRequest  = "invalid_request"  // -32600
	ReasonMethodNotFound  = "method_not_found" // -32601
	ReasonInvalidParams   = "invalid_params"   // -32602, any case below aside
	ReasonNotCaptured     = "not_captured"     // -32602: read_output of a stream that is not captured
	ReasonStdinClosed     = "stdin_closed"     // -32602: write_stdin after stdin was closed with eof
	ReasonStdinNotPiped   = "stdin_not_piped"  // -32602: write_stdin to a tool created with stdin "null"
	ReasonInternalError   = "internal_error"   // -32603
	ReasonServerBusy      = "server_busy"      // -32000
	ReasonTagInUse        = "tag_in_use"       // -32001
	ReasonNoSuchTag       = "no_such_tag"      // -32002
	ReasonExecNotFound    = "exec_not_found"   // -32003: argv[0] is no executable file (missing, not in PATH)
	ReasonSpawnFailed     = "spawn_failed"     // -32003: any other spawn failure (bad cwd, not executable...)
	ReasonShuttingDown    = "shutting_down"    // -32004
	ReasonNotReadyTimeout = "timeout"          // -32005: readiness did not hold in time
	ReasonNotReadyExited  = "exited"           // -32005: the tool exited before it was ready
	ReasonNotReadyStopped = "stopped"          // -32005: a stop of the tag ended the wait
)

// Client is a running sidecar and the connection to it. All methods are safe
// for concurrent use.
type Client struct {
	cmd    *exec.Cmd
	conn   *jsonrpc2.Conn
	stream *lineStream
	// sending is held while a request is handed to the Conn, which writes
	// it before returning; waiting for it can be given up (jsonrpc2's own
	// lock cannot), so a request whose ctx ends first is never written.
	sending chan struct{}

	dropped atomic.Int64
	notes   chan Notification

	exited   chan struct{} // closed when the sidecar has been waited for
	waitErr  error
	state    *os.ProcessState
	stdinErr error
	closeIn  sync.Once
}

// Start spawns the sidecar in its own session with pipes on stdin and stdout
// and starts reading its replies. It does not wait for the sidecar to be
// ready (the first Call does); ctx is checked before spawning, and the
// sidecar's life is not tied to it — end it with Close or Kill.
func Start(ctx context.Context, opts Options) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if opts.Binary == "" {
		return nil, errors.New("procmgr: Options.Binary is empty")
	}
	args := opts.Args
	if !namesParentPid(args) {
		args = append([]string{"--parent-pid", strconv.Itoa(os.Getpid())}, args...)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	cmd := exec.Command(opts.Binary, args...)
	cmd.Stdin = inR
	cmd.Stdout = outW
	cmd.Stderr = opts.Stderr
	cmd.ExtraFiles = opts.ExtraFiles
	cmd.Env = opts.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// A tool created with "inherit" may hold the sidecar's stderr after the
	// sidecar died; do not let that hang Wait forever.
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Start()
	// The child has its own copies now; keep only our ends so that EOF works
	// in both directions.
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, err
	}
	n := opts.NotificationBuffer
	if n <= 0 {
		n = DefaultNotificationBuffer
	}
	c := &Client{
		cmd:     cmd,
		stream:  &lineStream{in: bufio.NewReaderSize(outR, 64<<10), out: inW, rc: outR},
		notes:   make(chan Notification, n),
		exited:  make(chan struct{}),
		sending: make(chan struct{}, 1),
	}
	c.conn = jsonrpc2.NewConn(context.Background(), c.stream, jsonrpc2.HandlerWithError(c.handle),
		jsonrpc2.SetLogger(discardLogger{}),
		// A reply matched to no call: id null (an error about a message
		// whose id could not be read) never reaches here (see lineStream),
		// so this is a reply to a call abandoned through its ctx.
		jsonrpc2.OnRecv(func(req *jsonrpc2.Request, resp *jsonrpc2.Response) {
			if req == nil && resp != nil {
				c.stream.stray.Add(1)
			}
		}))
	go func() {
		c.waitErr = cmd.Wait()
		c.state = cmd.ProcessState
		close(c.exited)
	}()
	return c, nil
}

func namesParentPid(args []string) bool {
	for _, a := range args {
		if a == "--parent-pid" || a == "-parent-pid" ||
			strings.HasPrefix(a, "--parent-pid=") || strings.HasPrefix(a, "-parent-pid=") {
			return true
		}
	}
	return false
}

// handle receives the sidecar's notifications on the Conn's reading
// goroutine; it never blocks it.
func (c *Client) handle(_ context.Context, _ *jsonrpc2.Conn, req *jsonrpc2.Request) (any, error) {
	if !req.Notif {
		c.stream.violation("request from the sidecar (has id and method): %s %s", req.Method, req.ID)
		return nil, &jsonrpc2.Error{Code: CodeMethodNotFound, Message: "the client serves no methods"}
	}
	var params json.RawMessage
	if req.Params != nil {
		params = *req.Params
	}
	select {
	case c.notes <- Notification{Method: req.Method, Params: params}:
	default:
		c.dropped.Add(1)
	}
	return nil, nil
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}

// lineStream is the client's jsonrpc2.ObjectStream: one JSON text per line.
// jsonrpc2's Conn closes the connection on a message it cannot decode and
// would take a reply with id null for the reply to call 0; lineStream checks
// every line first, records what is wrong, and hands the Conn only
// well-formed responses and notifications.
type lineStream struct {
	in  *bufio.Reader
	rc  io.Closer
	wmu sync.Mutex // one line at a time on out
	out *os.File   // the sidecar's stdin

	mu    sync.Mutex
	bad   []string     // protocol violations seen on stdout
	stray atomic.Int64 // replies that can belong to no call
}

// wireMessage is any message the sidecar may write.
type wireMessage struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  *string         `json:"method"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   *RPCError       `json:"error"`
}

func (s *lineStream) violation(format string, a ...any) {
	s.mu.Lock()
	s.bad = append(s.bad, fmt.Sprintf(format, a...))
	s.mu.Unlock()
}

// ReadObject implements jsonrpc2.ObjectStream.
func (s *lineStream) ReadObject(v any) error {
	for {
		line, err := s.in.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 && s.check(line) {
			if uerr := json.Unmarshal(line, v); uerr != nil {
				s.violation("not a JSON-RPC message: %q (%v)", truncate(line), uerr)
			} else {
				return nil
			}
		}
		if err != nil {
			return err
		}
	}
}

// check records what is wrong with a line and reports whether the Conn
// should see it.
func (s *lineStream) check(line []byte) bool {
	var m wireMessage
	if err := json.Unmarshal(line, &m); err != nil {
		s.violation("not a JSON object: %q (%v)", truncate(line), err)
		return false
	}
	if m.JSONRPC != "2.0" {
		s.violation(`missing "jsonrpc":"2.0": %q`, truncate(line))
	}
	if m.Error != nil && m.Result != nil {
		s.violation("response with both result and error: %q", truncate(line))
	}
	if m.Method != nil {
		return true
	}
	if m.Error == nil && m.Result == nil {
		s.violation("response without result or error: %q", truncate(line))
		return false
	}
	// id null: an error reply to a message whose id could not be read, which
	// cannot belong to a Call (they always carry ids).
	if len(m.ID) == 0 || string(m.ID) == "null" {
		s.stray.Add(1)
		return false
	}
	return true
}

// WriteObject implements jsonrpc2.ObjectStream.
func (s *lineStream) WriteObject(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_, err = s.out.Write(append(b, '\n'))
	return err
}

// Close implements jsonrpc2.ObjectStream: the Conn is done reading. The
// sidecar's stdin is closed by CloseInput only.
func (s *lineStream) Close() error { return s.rc.Close() }

func truncate(b []byte) string {
	b = bytes.TrimRight(b, "\n")
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// Call sends a request and waits for its reply, ctx, or the sidecar's end.
// params nil is sent as {}. If result is non-nil the reply's result is decoded
// into it. An error reply is returned as *RPCError. A call whose ctx ends
// while it waits for its turn to be written is not sent.
func (c *Client) Call(ctx context.Context, method string, params, result any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if params == nil {
		params = struct{}{}
	}
	var raw json.RawMessage
	w, err := c.send(ctx, method, params)
	if err == nil {
		err = w.Wait(ctx, &raw)
	}
	return c.finish(ctx, method, err, raw, result)
}

// send writes a request, once no other is being written; it gives up, with
// nothing written, when ctx ends first.
func (c *Client) send(ctx context.Context, method string, params any) (jsonrpc2.Waiter, error) {
	select {
	case c.sending <- struct{}{}:
	case <-ctx.Done():
		return jsonrpc2.Waiter{}, ctx.Err()
	}
	defer func() { <-c.sending }()
	return c.conn.DispatchCall(ctx, method, params)
}

// finish turns the outcome of a call into Call's error, and decodes raw
// into result.
func (c *Client) finish(ctx context.Context, method string, err error, raw json.RawMessage, result any) error {
	var je *jsonrpc2.Error
	switch {
	case errors.Is(err, jsonrpc2.ErrClosed):
		return ErrSidecarGone
	case errors.As(err, &je):
		re := &RPCError{Code: int(je.Code), Message: je.Message}
		if je.Data != nil {
			re.Data = *je.Data
		}
		return re
	case err != nil:
		select {
		case <-c.conn.DisconnectNotify():
			if ctx.Err() == nil {
				return ErrSidecarGone
			}
		default:
		}
		if ctx.Err() != nil {
			return err
		}
		return fmt.Errorf("procmgr: %s: %w", method, err)
	}
	if result == nil {
		return nil
	}
	if err := json.Unmarshal(raw, result); err != nil {
		return fmt.Errorf("procmgr: decoding %s result %s: %w", method, raw, err)
	}
	return nil
}

// Notifications delivers the sidecar's notifications. The channel is bounded:
// when it is full, notifications are dropped and counted (DroppedNotifications)
// so that the reader never blocks. It is never closed.
func (c *Client) Notifications() <-chan Notification { return c.notes }

// DroppedNotifications is how many notifications were dropped because the
// Notifications channel was full.
func (c *Client) DroppedNotifications() int64 { return c.dropped.Load() }

// ProtocolViolations lists what the sidecar wrote on stdout that was not a
// well-formed JSON-RPC 2.0 response or notification.
func (c *Client) ProtocolViolations() []string {
	c.stream.mu.Lock()
	defer c.stream.mu.Unlock()
	return append([]string(nil), c.stream.bad...)
}

// StrayReplies counts replies that matched no pending call (id null, or a
// call abandoned through its ctx).
func (c *Client) StrayReplies() int {
	return int(c.stream.stray.Load())
}

// Pid is the sidecar's process id.
func (c *Client) Pid() int { return c.cmd.Process.Pid }

// Gone is closed when the sidecar's stdout reaches EOF.
func (c *Client) Gone() <-chan struct{} { return c.conn.DisconnectNotify() }

// Done is closed once the sidecar has exited and been reaped.
func (c *Client) Done() <-chan struct{} { return c.exited }

// Kill sends SIGKILL to the sidecar (only the sidecar, not its tools: their
// fate is the sidecar's business).
func (c *Client) Kill() error {
	err := c.cmd.Process.Kill()
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

// CloseInput closes the sidecar's stdin, which the sidecar treats as the
// host's death.
func (c *Client) CloseInput() error {
	c.closeIn.Do(func() {
		c.stream.wmu.Lock()
		c.stdinErr = c.stream.out.Close()
		c.stream.wmu.Unlock()
	})
	return c.stdinErr
}

// Wait waits for the sidecar to exit. It returns nil for exit status 0 and
// otherwise the error of exec.Cmd.Wait (an *exec.ExitError).
func (c *Client) Wait() error {
	<-c.exited
	return c.waitErr
}

// ProcessState is the sidecar's exit state, or nil while it runs.
func (c *Client) ProcessState() *os.ProcessState {
	select {
	case <-c.exited:
		return c.state
	default:
		return nil
	}
}

// CloseTimeout bounds each phase of Close.
var CloseTimeout = 15 * time.Second

// Close asks the sidecar to shut down (stopping all tools), closes its stdin
// and waits for it to exit, each step bounded by CloseTimeout; if the sidecar
// has not exited by then it is killed. It returns the exit status as Wait
// does, or an error saying why the shutdown was not clean.
func (c *Client) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), CloseTimeout)
	_, serr := c.Shutdown(ctx, nil)
	cancel()
	c.CloseInput()
	select {
	case <-c.exited:
	case <-time.After(CloseTimeout):
		c.Kill()
		<-c.exited
		return fmt.Errorf("procmgr: sidecar did not exit within %v after shutdown; killed", CloseTimeout)
	}
	if serr != nil && !errors.Is(serr, ErrSidecarGone) {
		if c.waitErr != nil {
			return fmt.Errorf("procmgr: shutdown: %v; exit: %w", serr, c.waitErr)
		}
		return fmt.Errorf("procmgr: shutdown: %w", serr)
	}
	return c.waitErr
}
