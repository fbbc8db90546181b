// Package rpc is the sidecar's JSON-RPC face: it maps the protocol's methods
// and their JSON shapes (docs/protocol.md) onto package manager. It is the
// only package that knows both: the transport below it (package
// rpc/jsonrpc: framing, validation, dispatch, notifications) knows nothing of
// processes, and manager knows nothing of JSON.
package rpc

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"

	"procmgr/manager"
	"procmgr/rpc/jsonrpc"
)

// Protocol is the protocol version hello reports.
const Protocol = 1

// Error codes of the protocol, beyond JSON-RPC's own.
const (
	CodeTagInUse     = -32001
	CodeNoSuchTag    = -32002
	CodeSpawnFailed  = -32003
	CodeShuttingDown = -32004
	CodeNotReady     = -32005
)

// Options configures the methods.
type Options struct {
	Version  string
	Features []string
	// CgroupOffReason says why tools get no cgroup of their own, when they
	// do not (hello's cgroup.reason).
	CgroupOffReason string
	// Environ is the environment a tool inherits when inherit_env is true
	// (os.Environ if nil).
	Environ func() []string
	// OnShutdown runs once the reply to `shutdown` has been handed to the
	// stream (written unless the host stopped reading; see jsonrpc.Server.Drain).
	OnShutdown func()
}

type service struct {
	m    *manager.Manager
	opts Options
}

// Register adds every method of the protocol to srv, served by m.
func Register(srv *jsonrpc.Server, m *manager.Manager, opts Options) {
	if opts.Environ == nil {
		opts.Environ = os.Environ
	}
	if opts.OnShutdown == nil {
		opts.OnShutdown = func() {}
	}
	s := &service{m: m, opts: opts}
	// Lookups answer from memory at once: they are served in order on the
	// reading goroutine. Everything that can wait (on a fork, a tool, the
	// OS process table) runs on a goroutine of its own.
	jsonrpc.HandleInline(srv, "hello", s.hello)
	jsonrpc.HandleInline(srv, "running", s.running)
	jsonrpc.HandleInline(srv, "is_alive", s.isAlive)
	jsonrpc.HandleInline(srv, "fetch", s.fetch)
	jsonrpc.Handle(srv, "list", s.list) // inline unless with stats (listParams.IsLookup)
	jsonrpc.Handle(srv, "stats", s.stats)
	jsonrpc.HandleOrdered(srv, "create", s.reserveCreate, s.create) // the tag is reserved in order
	jsonrpc.Handle(srv, "stop", s.stop)
	jsonrpc.Handle(srv, "signal", s.signal)
	jsonrpc.Handle(srv, "wait", s.wait)
	jsonrpc.Handle(srv, "shutdown", s.shutdown)
	jsonrpc.Handle(srv, "read_output", s.readOutput)
	jsonrpc.Handle(srv, "write_stdin", s.writeStdin)
}

// Notify sends the notifications an event makes: `state` for every event,
// preceded by `exited` for an exit. notify must not block.
func Notify(notify func(method string, params any), ev manager.Event) {
	pi := toProcessInfo(ev.Info)
	if ev.Kind == manager.EventExited {
		notify("exited", exitedParams{Tag: pi.Tag, Pid: pi.Pid, ExitCode: pi.ExitCode, Signal: pi.Signal, Info: pi})
	}
	notify("state", stateParams{Tag: pi.Tag, State: string(ev.Kind), Seq: ev.Seq, Info: pi})
}

type stateParams struct {
	Tag   string      `json:"tag"`
	State string      `json:"state"`
	Seq   uint64      `json:"seq"`
	Info  processInfo `json:"info"`
}

type exitedParams struct {
	Tag      string      `json:"tag"`
	Pid      int         `json:"pid"`
	ExitCode *int        `json:"exit_code"`
	Signal   *string     `json:"signal"`
	Info     processInfo `json:"info"`
}

type helloResult struct {
	Name     string   `json:"name"`
	Version  string   `json:"version"`
	Protocol int      `json:"protocol"`
	Pid      int      `json:"pid"`
	Session  string   `json:"session"`
	Features []string `json:"features"`
	// WatchdogPid is the session watchdog's pid, absent when none runs.
	WatchdogPid int `json:"watchdog_pid,omitempty"`
	// Orphans counts the processes the sidecar adopted that belong to no
	// tool (killed when the session ends); those of a tool are in its
	// ProcessInfo's orphans.
	Orphans int        `json:"orphans"`
	Cgroup  cgroupMode `json:"cgroup"`
}

// cgroupMode says whether each tool gets a cgroup v2 of its own: with the
// session's directory when on, with the reason when off.
type cgroupMode struct {
	On     bool   `json:"on"`
	Dir    string `json:"dir,omitempty"`
	Reason string `json:"reason,omitempty"`
}

func (s *service) hello(context.Context, struct{}) (helloResult, error) {
	return helloResult{
		Name: "procmgr", Version: s.opts.Version, Protocol: Protocol,
		Pid: os.Getpid(), Session: s.m.Session(), Features: s.opts.Features,
		WatchdogPid: s.m.WatchdogPid(), Orphans: s.m.Orphans(), Cgroup: s.cgroupMode(),
	}, nil
}

func (s *service) cgroupMode() cgroupMode {
	if dir := s.m.CgroupDir(); dir != "" {
		return cgroupMode{On: true, Dir: dir}
	}
	return cgroupMode{Reason: s.opts.CgroupOffReason}
}

type tagParams struct {
	Tag *string `json:"tag"`
}

func (p tagParams) tag() (string, error) {
	if p.Tag == nil {
		return "", jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "invalid params: tag is required")
	}
	return *p.Tag, nil
}

func (s *service) running(_ context.Context, p tagParams) (bool, error) {
	tag, err := p.tag()
	if err != nil {
		return false, err
	}
	return s.m.Running(tag), nil
}

func (s *service) isAlive(_ context.Context, p tagParams) (bool, error) {
	tag, err := p.tag()
	if err != nil {
		return false, err
	}
	alive, err := s.m.IsAlive(tag)
	return alive, toRPCError(err, tag)
}

func (s *service) fetch(_ context.Context, p tagParams) (*processInfo, error) {
	tag, err := p.tag()
	if err != nil {
		return nil, err
	}
	in, ok := s.m.Fetch(tag)
	if !ok {
		return nil, nil
	}
	pi := toProcessInfo(in)
	return &pi, nil
}

func (s *service) list(_ context.Context, p listParams) (any, error) {
	if p.Stats {
		return s.listStats(), nil
	}
	infos := s.m.List()
	out := make([]processInfo, len(infos))
	for i, in := range infos {
		out[i] = toProcessInfo(in)
	}
	return out, nil
}

type stopParams struct {
	Tag     *string  `json:"tag"`
	Signal  *signal  `json:"signal"`
	Timeout *seconds `json:"timeout"`
}

func (s *service) stop(ctx context.Context, p stopParams) (processInfo, error) {
	tag, err := tagParams{p.Tag}.tag()
	if err != nil {
		return processInfo{}, err
	}
	var sig syscall.Signal
	if p.Signal != nil {
		sig = p.Signal.sig
	}
	timeout := manager.UseDefault
	if p.Timeout != nil {
		timeout = p.Timeout.d
	}
	in, err := s.m.Stop(ctx, tag, sig, timeout)
	if err != nil {
		return processInfo{}, toRPCError(err, tag)
	}
	return toProcessInfo(in), nil
}

type signalParams struct {
	Tag    *string `json:"tag"`
	Signal *signal `json:"signal"`
}

func (s *service) signal(_ context.Context, p signalParams) (any, error) {
	tag, err := tagParams{p.Tag}.tag()
	if err != nil {
		return nil, err
	}
	if p.Signal == nil {
		return nil, jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "invalid params: signal is required")
	}
	return nil, toRPCError(s.m.Signal(tag, p.Signal.sig), tag)
}

type waitParams struct {
	Tag     *string  `json:"tag"`
	Timeout *seconds `json:"timeout"`
}

// WaitsLong: a wait lasts until the tool exits (jsonrpc.LongWaiter).
func (waitParams) WaitsLong() bool { return true }

func (s *service) wait(ctx context.Context, p waitParams) (processInfo, error) {
	tag, err := tagParams{p.Tag}.tag()
	if err != nil {
		return processInfo{}, err
	}
	if p.Timeout != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.Timeout.d)
		defer cancel()
	}
	in, err := s.m.Wait(ctx, tag)
	if err != nil {
		return processInfo{}, toRPCError(err, tag)
	}
	return toProcessInfo(in), nil
}

type shutdownParams struct {
	Timeout *seconds `json:"timeout"`
}

type shutdownResult struct {
	Stopped int `json:"stopped"`
	// onReplied is Options.OnShutdown, run once the reply is handed to the
	// stream (jsonrpc.AfterReplier), so the caller has the answer before
	// the sidecar exits.
	onReplied func()
}

func (r shutdownResult) AfterReply() {
	if r.onReplied != nil {
		r.onReplied()
	}
}

func (s *service) shutdown(ctx context.Context, p shutdownParams) (shutdownResult, error) {
	grace := manager.UseDefault
	if p.Timeout != nil {
		grace = p.Timeout.d
	}
	// The caller's connection may end mid-shutdown; the shutdown must not.
	n := s.m.Shutdown(context.WithoutCancel(ctx), grace)
	return shutdownResult{Stopped: n, onReplied: s.opts.OnShutdown}, nil
}

// Reason words of the protocol's errors (error.data.reason, docs/protocol.md),
// beyond the ones of JSON-RPC's codes (jsonrpc.Reason*).
const (
	ReasonTagInUse        = "tag_in_use"
	ReasonNoSuchTag       = "no_such_tag"
	ReasonExecNotFound    = "exec_not_found"
	ReasonSpawnFailed     = "spawn_failed"
	ReasonShuttingDown    = "shutting_down"
	ReasonNotCaptured     = "not_captured"
	ReasonStdinClosed     = "stdin_closed"
	ReasonStdinNotPiped   = "stdin_not_piped"
	ReasonNotReadyTimeout = "timeout"
	ReasonNotReadyExited  = "exited"
	ReasonNotReadyStopped = "stopped"
)

// notReadyData is -32005's data beyond the reason: the tag, and from a
// *manager.NotReadyError the end of the captured output ("output_tail", null
// when nothing is captured) and how the tool exited ("exit_status", null
// when it did not exit on its own before it was ready).
func notReadyData(nre *manager.NotReadyError, tag string) any {
	type exitStatus struct {
		ExitCode *int    `json:"exit_code"`
		Signal   *string `json:"signal"`
	}
	d := struct {
		Tag        string      `json:"tag"`
		Stopped    bool        `json:"stopped"`
		OutputTail *string     `json:"output_tail"`
		ExitStatus *exitStatus `json:"exit_status"`
	}{Tag: tag, Stopped: nre.Stopped}
	if nre.Captured {
		d.OutputTail = &nre.OutputTail
	}
	if nre.Exited {
		es := &exitStatus{}
		if nre.Exit.Signal != 0 {
			name := manager.SignalName(nre.Exit.Signal)
			es.Signal = &name
		} else {
			code := nre.Exit.Code
			es.ExitCode = &code
		}
		d.ExitStatus = es
	}
	return d
}

// notReadyReason is -32005's reason word: a stop ended the wait, the tool
// exited first, or the condition did not hold in time.
func notReadyReason(nre *manager.NotReadyError) string {
	switch {
	case nre.Stopped:
		return ReasonNotReadyStopped
	case nre.Exited:
		return ReasonNotReadyExited
	}
	return ReasonNotReadyTimeout
}

// toRPCError maps the manager's sentinel errors onto the protocol's codes
// and reason words.
func toRPCError(err error, tag string) error {
	if err == nil {
		return nil
	}
	data := map[string]string{"tag": tag}
	switch {
	case errors.Is(err, manager.ErrTagInUse):
		return &jsonrpc.Error{Code: CodeTagInUse, Message: err.Error(), Reason: ReasonTagInUse, Data: data}
	case errors.Is(err, manager.ErrNoSuchTag):
		return &jsonrpc.Error{Code: CodeNoSuchTag, Message: err.Error(), Reason: ReasonNoSuchTag, Data: data}
	case errors.Is(err, manager.ErrSpawn):
		reason := ReasonSpawnFailed
		if errors.Is(err, manager.ErrExecNotFound) {
			reason = ReasonExecNotFound
		}
		return &jsonrpc.Error{Code: CodeSpawnFailed, Message: err.Error(), Reason: reason, Data: data}
	case errors.Is(err, manager.ErrNotReady):
		var nre *manager.NotReadyError
		if !errors.As(err, &nre) {
			nre = &manager.NotReadyError{Tag: tag}
		}
		return &jsonrpc.Error{Code: CodeNotReady, Message: err.Error(), Reason: notReadyReason(nre), Data: notReadyData(nre, tag)}
	case errors.Is(err, manager.ErrShuttingDown):
		return &jsonrpc.Error{Code: CodeShuttingDown, Message: "shutting down: no new tools are started", Reason: ReasonShuttingDown, Data: data}
	case errors.Is(err, manager.ErrInvalid):
		msg := strings.TrimPrefix(err.Error(), manager.ErrInvalid.Error()+": ")
		reason := jsonrpc.ReasonInvalidParams
		switch {
		case errors.Is(err, manager.ErrNotCaptured):
			reason = ReasonNotCaptured
		case errors.Is(err, manager.ErrStdinClosed):
			reason = ReasonStdinClosed
		case errors.Is(err, manager.ErrStdinNotPiped):
			reason = ReasonStdinNotPiped
		}
		return &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "invalid params: " + msg, Reason: reason, Data: data}
	}
	return err
}
