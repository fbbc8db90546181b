package client

import (
	"context"
	"encoding/json"
	"sync"
	"time"
)

// Ptr returns a pointer to v, for optional fields such as timeouts.
func Ptr[T any](v T) *T { return &v }

// HelloResult is the result of "hello".
type HelloResult struct {
	Name     string   `json:"name"`
	Version  string   `json:"version"`
	Protocol int      `json:"protocol"`
	Pid      int      `json:"pid"`
	Session  string   `json:"session"` // the PROCMGR_SESSION value of every tool
	Features []string `json:"features"`
	// WatchdogPid is the session watchdog's pid, 0 when none runs.
	WatchdogPid int `json:"watchdog_pid"`
	// Orphans counts adopted processes that belong to no tool (killed when
	// the session ends), as of the sidecar's last look.
	Orphans int `json:"orphans"`
	// Cgroup says whether each tool gets a cgroup v2 of its own, and why not.
	Cgroup struct {
		On     bool   `json:"on"`
		Dir    string `json:"dir"`
		Reason string `json:"reason"`
	} `json:"cgroup"`
}

// ProcessInfo describes a tool as the sidecar sees it.
type ProcessInfo struct {
	Tag       string     `json:"tag"`
	Argv      []string   `json:"argv"`
	Pid       int        `json:"pid"`
	Pgid      int        `json:"pgid"`
	State     string     `json:"state"` // "running", "stopping", "exited" or "fatal" (its restart policy gave up)
	Alive     bool       `json:"alive"`
	ExitCode  *int       `json:"exit_code"`
	Signal    *string    `json:"signal"` // e.g. "SIGKILL"
	StartedAt time.Time  `json:"started_at"`
	ExitedAt  *time.Time `json:"exited_at"`
	Restarts  int        `json:"restarts"`
	// Orphans counts the processes the sidecar adopted that belong to this
	// tool (they go with its stop).
	Orphans int `json:"orphans"`
}

// Output is a tool's stdout or stderr destination: "discard", "inherit",
// "stdout" (stderr only) or a file. Use the Output* values and OutputFile.
type Output struct {
	Mode   string // "discard", "inherit", "stdout"; empty when File is set
	File   string
	Append bool
}

// Output destinations.
var (
	OutputDiscard = &Output{Mode: "discard"}
	OutputInherit = &Output{Mode: "inherit"}
	OutputStdout  = &Output{Mode: "stdout"}
)

// OutputFile sends output to path, truncating it unless appendTo is set.
func OutputFile(path string, appendTo bool) *Output {
	return &Output{File: path, Append: appendTo}
}

// MarshalJSON encodes a mode as a string and a file as {"file","append"}.
func (o Output) MarshalJSON() ([]byte, error) {
	if o.File != "" {
		return json.Marshal(struct {
			File   string `json:"file"`
			Append bool   `json:"append,omitempty"`
		}{o.File, o.Append})
	}
	return json.Marshal(o.Mode)
}

// CreateParams are the parameters of "create". Optional fields are omitted
// when zero/nil so that the sidecar's defaults apply.
type CreateParams struct {
	Tag         string            `json:"tag"`
	Argv        []string          `json:"argv"`
	Cwd         string            `json:"cwd,omitempty"`
	Env         map[string]string `json:"env,omitempty"`
	InheritEnv  *bool             `json:"inherit_env,omitempty"`
	Stdout      *Output           `json:"stdout,omitempty"`
	Stderr      *Output           `json:"stderr,omitempty"`
	StopSignal  any               `json:"stop_signal,omitempty"`  // name ("SIGTERM") or number
	StopTimeout *float64          `json:"stop_timeout,omitempty"` // seconds
	// Daemon: when the launched process exits 0, the tool follows the daemon
	// it left behind (the process named in PidFile, else the oldest one the
	// sidecar adopted).
	Daemon  bool   `json:"daemon,omitempty"`
	PidFile string `json:"pid_file,omitempty"`
	// Ready is create's "ready" object as docs/protocol.md gives it, e.g.
	// map[string]any{"tcp": "127.0.0.1:8000", "timeout": 10}.
	Ready any `json:"ready,omitempty"`
}

// StopParams are the parameters of "stop".
type StopParams struct {
	Tag     string   `json:"tag"`
	Signal  any      `json:"signal,omitempty"`  // name or number; default the tool's stop_signal
	Timeout *float64 `json:"timeout,omitempty"` // seconds; default the tool's stop_timeout
}

// ExitedParams are the params of the "exited" notification.
type ExitedParams struct {
	Tag      string      `json:"tag"`
	Pid      int         `json:"pid"`
	ExitCode *int        `json:"exit_code"`
	Signal   *string     `json:"signal"`
	Info     ProcessInfo `json:"info"`
}

// Exited decodes an "exited" notification's params.
func (n Notification) Exited() (ExitedParams, error) {
	var p ExitedParams
	err := json.Unmarshal(n.Params, &p)
	return p, err
}

type tagParams struct {
	Tag string `json:"tag"`
}

// Hello asks the sidecar who it is.
func (c *Client) Hello(ctx context.Context) (HelloResult, error) {
	var r HelloResult
	err := c.Call(ctx, "hello", nil, &r)
	return r, err
}

// Create starts a tool and returns once it has been exec'd. When ctx ends
// first, Create returns ctx's error, and an abandoned create leaves no tool
// holding the tag: if the request was written (or is being written), a stop
// for the tag is sent once the write has completed (which also ends a
// readiness wait at once). Create waits for that stop and the create's own
// answer for at most CancelStopTimeout; past that it returns and the stop is
// still sent, in the background, for as long as the connection lasts: a
// write that stalls (the sidecar is not reading) must not leave the tool
// running once it completes. If the create was still waiting for its turn
// to be written, it is not sent at all, and neither is a stop (which could
// reach the sidecar before the create, and leave the tool running).
func (c *Client) Create(ctx context.Context, p CreateParams) (ProcessInfo, error) {
	if err := ctx.Err(); err != nil {
		return ProcessInfo{}, err // not sent: nothing to undo
	}
	type result struct {
		info ProcessInfo
		err  error
	}
	var (
		mu        sync.Mutex
		abandoned bool // ctx ended: the create must not be written from now on
		writing   bool // the create is being written (or was)
	)
	written := make(chan bool, 1) // whether the write succeeded
	done := make(chan result, 1)
	go func() {
		wctx := context.WithoutCancel(ctx) // once written, the answer is awaited
		select {
		case c.sending <- struct{}{}:
		case <-ctx.Done():
			return // never written
		}
		mu.Lock()
		if abandoned {
			mu.Unlock()
			<-c.sending
			return
		}
		writing = true
		mu.Unlock()
		w, err := c.conn.DispatchCall(wctx, "create", p)
		<-c.sending
		written <- err == nil
		var raw json.RawMessage
		if err == nil {
			err = w.Wait(wctx, &raw)
		}
		var r ProcessInfo
		err = c.finish(wctx, "create", err, raw, &r)
		done <- result{r, err}
	}()
	select {
	case res := <-done:
		return res.info, res.err
	case <-ctx.Done():
	}
	mu.Lock()
	abandoned = true
	wasWriting := writing
	mu.Unlock()
	if !wasWriting {
		return ProcessInfo{}, ctx.Err() // never written: nothing to undo
	}
	undone := make(chan struct{})
	go func() {
		defer close(undone)
		select {
		case ok := <-written:
			if !ok {
				return // the write failed: nothing to undo
			}
		case <-c.conn.DisconnectNotify():
			return // the sidecar is gone, and its tools with it
		}
		sctx, cancel := c.untilGone(context.WithoutCancel(ctx))
		defer cancel()
		c.Call(sctx, "stop", tagParams{p.Tag}, nil) // -32002 when it never started: fine
		select {
		case <-done: // the create's own answer, now that the stop ended it
		case <-sctx.Done():
		}
	}()
	t := time.NewTimer(cancelStopTimeout)
	defer t.Stop()
	select {
	case <-undone:
	case <-t.C: // the stop goes on without us
	}
	return ProcessInfo{}, ctx.Err()
}

// untilGone returns a copy of parent that is also done once the connection
// to the sidecar has ended.
func (c *Client) untilGone(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	go func() {
		select {
		case <-c.conn.DisconnectNotify():
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// CancelStopTimeout bounds how long Create waits, once its ctx has ended,
// for the stop that undoes its create (the stop itself is sent regardless).
const CancelStopTimeout = 30 * time.Second

// cancelStopTimeout is CancelStopTimeout, shortened by tests.
var cancelStopTimeout = CancelStopTimeout

// Running reports whether tag is in use (true after the tool exited on its
// own, until Stop releases it).
func (c *Client) Running(ctx context.Context, tag string) (bool, error) {
	var r bool
	err := c.Call(ctx, "running", tagParams{tag}, &r)
	return r, err
}

// IsAlive reports whether the tool's main process exists now.
func (c *Client) IsAlive(ctx context.Context, tag string) (bool, error) {
	var r bool
	err := c.Call(ctx, "is_alive", tagParams{tag}, &r)
	return r, err
}

// Fetch returns the tool's info, or nil for an unknown tag.
func (c *Client) Fetch(ctx context.Context, tag string) (*ProcessInfo, error) {
	var r *ProcessInfo
	err := c.Call(ctx, "fetch", tagParams{tag}, &r)
	return r, err
}

// Stop stops the tool's whole process group and releases the tag.
func (c *Client) Stop(ctx context.Context, p StopParams) (ProcessInfo, error) {
	var r ProcessInfo
	err := c.Call(ctx, "stop", p, &r)
	return r, err
}

// Signal sends sig (name or number) to the tool's process group.
func (c *Client) Signal(ctx context.Context, tag string, sig any) error {
	return c.Call(ctx, "signal", struct {
		Tag    string `json:"tag"`
		Signal any    `json:"signal"`
	}{tag, sig}, nil)
}

// WaitTool waits until the tool exits, or until timeout seconds pass (nil:
// no timeout), and returns its info as it then stands.
func (c *Client) WaitTool(ctx context.Context, tag string, timeout *float64) (ProcessInfo, error) {
	var r ProcessInfo
	err := c.Call(ctx, "wait", struct {
		Tag     string   `json:"tag"`
		Timeout *float64 `json:"timeout,omitempty"`
	}{tag, timeout}, &r)
	return r, err
}

// List returns every tool, sorted by tag.
func (c *Client) List(ctx context.Context) ([]ProcessInfo, error) {
	var r []ProcessInfo
	err := c.Call(ctx, "list", nil, &r)
	return r, err
}

// Shutdown stops all tools (within timeout seconds each, nil for the
// default); the sidecar then exits. It returns how many tools were stopped.
func (c *Client) Shutdown(ctx context.Context, timeout *float64) (int, error) {
	var r struct {
		Stopped int `json:"stopped"`
	}
	err := c.Call(ctx, "shutdown", struct {
		Timeout *float64 `json:"timeout,omitempty"`
	}{timeout}, &r)
	return r.Stopped, err
}

// Stats is the result of "stats": what a tool's whole tree costs (see
// docs/protocol.md). A figure the OS does not show is nil.
type Stats struct {
	Processes  int      `json:"processes"`   // live members; 0 once none is left
	Threads    *int     `json:"threads"`     // summed over live members
	CPUSeconds *float64 `json:"cpu_seconds"` // user + system, reaped members of the run included
	RSSBytes   *int64   `json:"rss_bytes"`   // summed over live members
	PSSBytes   *int64   `json:"pss_bytes"`   // proportional set size: shared pages counted once
	Uptime     float64  `json:"uptime"`      // seconds since the current run started
	Pids       []int    `json:"pids"`        // the live members, the main process first
}

// Stats samples the tool's whole tree: its process group, cgroup and the
// processes carrying its mark. A tool that is not running reports its last
// run's totals with Processes 0.
func (c *Client) Stats(ctx context.Context, tag string) (Stats, error) {
	var r Stats
	err := c.Call(ctx, "stats", tagParams{tag}, &r)
	return r, err
}
