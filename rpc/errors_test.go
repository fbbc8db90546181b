package rpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"syscall"
	"testing"

	"procmgr/manager"
	"procmgr/rpc/jsonrpc"
)

func TestToRPCErrorGivesEverySentinelItsCodeAndReason(t *testing.T) {
	for _, c := range []struct {
		name   string
		err    error
		code   int64
		reason string
	}{
		{"tag in use", fmt.Errorf("%w: %q", manager.ErrTagInUse, "t"), CodeTagInUse, "tag_in_use"},
		{"no such tag", fmt.Errorf("%w: %q", manager.ErrNoSuchTag, "t"), CodeNoSuchTag, "no_such_tag"},
		{"spawn failed", fmt.Errorf("%w: chdir: %w", manager.ErrSpawn, fs.ErrNotExist), CodeSpawnFailed, "spawn_failed"},
		{"exec not found", fmt.Errorf("%w: %w in $PATH", manager.ErrSpawn, manager.ErrExecNotFound), CodeSpawnFailed, "exec_not_found"},
		{"shutting down", manager.ErrShuttingDown, CodeShuttingDown, "shutting_down"},
		{"invalid", fmt.Errorf("%w: bad tag", manager.ErrInvalid), jsonrpc.CodeInvalidParams, "invalid_params"},
		{"not captured", fmt.Errorf("%w: %w: stdout", manager.ErrInvalid, manager.ErrNotCaptured), jsonrpc.CodeInvalidParams, "not_captured"},
		{"stdin closed", fmt.Errorf("%w: %w", manager.ErrInvalid, manager.ErrStdinClosed), jsonrpc.CodeInvalidParams, "stdin_closed"},
		{"stdin not piped", fmt.Errorf("%w: %w", manager.ErrInvalid, manager.ErrStdinNotPiped), jsonrpc.CodeInvalidParams, "stdin_not_piped"},
		{"not ready in time", &manager.NotReadyError{Tag: "t", Detail: "not ready within 1s"}, CodeNotReady, "timeout"},
		{"exited before ready", &manager.NotReadyError{Tag: "t", Exited: true}, CodeNotReady, "exited"},
		{"stopped while waiting", &manager.NotReadyError{Tag: "t", Stopped: true}, CodeNotReady, "stopped"},
		{"stopped wins over exited", &manager.NotReadyError{Tag: "t", Stopped: true, Exited: true}, CodeNotReady, "stopped"},
		{"not ready without its details", fmt.Errorf("%w: somehow", manager.ErrNotReady), CodeNotReady, "timeout"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var re *jsonrpc.Error
			if err := toRPCError(c.err, "t"); !errors.As(err, &re) {
				t.Fatalf("toRPCError(%v) = %#v, want a *jsonrpc.Error", c.err, err)
			}
			if re.Code != c.code || re.Reason != c.reason {
				t.Errorf("code %d reason %q, want %d %q", re.Code, re.Reason, c.code, c.reason)
			}
			data := dataOf(t, re)
			if data["tag"] != "t" {
				t.Errorf("data %v does not carry the tag", data)
			}
		})
	}
}

func TestToRPCErrorPassesNilAndForeignErrorsThrough(t *testing.T) {
	if err := toRPCError(nil, "t"); err != nil {
		t.Errorf("nil became %v", err)
	}
	// Anything else is the server's -32603, its message kept.
	foreign := errors.New("disk on fire")
	if err := toRPCError(foreign, "t"); err != foreign {
		t.Errorf("a foreign error became %v", err)
	}
}

func TestInvalidParamsMessageDropsTheManagerPrefix(t *testing.T) {
	err := toRPCError(fmt.Errorf("%w: %w: stdin of %q was closed", manager.ErrInvalid, manager.ErrStdinClosed, "t"), "t")
	var re *jsonrpc.Error
	if !errors.As(err, &re) || re.Message != `invalid params: stdin was closed: stdin of "t" was closed` {
		t.Errorf("message %q", re.Message)
	}
}

func TestNotReadyDataCarriesTheOutputTailAndHowTheToolExited(t *testing.T) {
	for _, c := range []struct {
		name string
		nre  manager.NotReadyError
		want string // data beyond the tag, as JSON
	}{
		{"nothing captured, still running", manager.NotReadyError{},
			`{"tag":"t","stopped":false,"output_tail":null,"exit_status":null}`},
		{"captured, exited with a code", manager.NotReadyError{Captured: true, OutputTail: "boom\n", Exited: true, Exit: manager.Exit{Code: 3}},
			`{"tag":"t","stopped":false,"output_tail":"boom\n","exit_status":{"exit_code":3,"signal":null}}`},
		{"captured nothing, killed by a signal", manager.NotReadyError{Captured: true, Exited: true, Exit: manager.Exit{Code: -1, Signal: syscall.SIGKILL}},
			`{"tag":"t","stopped":false,"output_tail":"","exit_status":{"exit_code":null,"signal":"SIGKILL"}}`},
		{"stopped", manager.NotReadyError{Stopped: true},
			`{"tag":"t","stopped":true,"output_tail":null,"exit_status":null}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			nre := c.nre
			nre.Tag = "t"
			var re *jsonrpc.Error
			if !errors.As(toRPCError(&nre, "t"), &re) {
				t.Fatal("not a *jsonrpc.Error")
			}
			b, err := json.Marshal(re.Data)
			if err != nil || string(b) != c.want {
				t.Errorf("data %s (%v)\nwant %s", b, err, c.want)
			}
			if !strings.Contains(re.Message, "not ready") {
				t.Errorf("message %q lost the manager's text", re.Message)
			}
		})
	}
}

// dataOf is e's data as a JSON object.
func dataOf(t *testing.T, e *jsonrpc.Error) map[string]any {
	t.Helper()
	b, err := json.Marshal(e.Data)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("data %s is not an object: %v", b, err)
	}
	return m
}
