package rpc

import (
	"errors"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"procmgr/manager"
	"procmgr/rpc/jsonrpc"
)

// toSpecOf decodes create params as the server does and maps them.
func toSpecOf(t *testing.T, params string) (manager.Spec, error) {
	t.Helper()
	var p createParams
	if err := jsonrpc.Unmarshal([]byte(params), &p); err != nil {
		t.Fatalf("%s does not decode: %v", params, err)
	}
	return p.toSpec(func() []string { return []string{"HOME=/root", "PATH=/bin"} })
}

func TestCreateParamsMapOntoSpec(t *testing.T) {
	inherited := []string{"HOME=/root", "PATH=/bin"}
	for _, c := range []struct {
		name, params string
		want         manager.Spec
	}{
		{"absent fields leave the manager's defaults", `{"tag":"t","argv":["/bin/true"]}`,
			manager.Spec{Tag: "t", Argv: []string{"/bin/true"}, Env: inherited}},
		{"env overrides the inherited environment", `{"tag":"t","argv":["x"],"env":{"PATH":null,"A":"1"}}`,
			manager.Spec{Tag: "t", Argv: []string{"x"}, Env: []string{"HOME=/root", "A=1"}}},
		{"inherit_env false starts empty", `{"tag":"t","argv":["x"],"inherit_env":false,"env":{"A":"1"}}`,
			manager.Spec{Tag: "t", Argv: []string{"x"}, Env: []string{"A=1"}}},
		{"clear_env starts empty", `{"tag":"t","argv":["x"],"clear_env":true}`,
			manager.Spec{Tag: "t", Argv: []string{"x"}, Env: []string{}}},
		{"stop signal, stop timeout zero, stdin pipe",
			`{"tag":"t","argv":["x"],"stop_signal":"INT","stop_timeout":0,"stdin":"pipe"}`,
			manager.Spec{Tag: "t", Argv: []string{"x"}, Env: inherited, StopSignal: syscall.SIGINT, StopTimeout: durp(0), StdinPipe: true}},
		{"stdin null is the default", `{"tag":"t","argv":["x"],"stdin":"null"}`,
			manager.Spec{Tag: "t", Argv: []string{"x"}, Env: inherited}},
		{"a relative capture file is taken from cwd",
			`{"tag":"t","argv":["x"],"cwd":"/srv","stdout":{"capture":{"file":"out.log"}},"stderr":{"capture":{"file":"/var/err.log","file_backups":0}}}`,
			manager.Spec{Tag: "t", Argv: []string{"x"}, Dir: "/srv", Env: inherited,
				Stdout: manager.Output{Kind: manager.Captured, Capture: manager.Capture{File: "/srv/out.log", FileBackups: manager.DefaultFileBackups}},
				Stderr: manager.Output{Kind: manager.Captured, Capture: manager.Capture{File: "/var/err.log"}}}},
		{"a relative capture file without cwd is left to the sidecar's",
			`{"tag":"t","argv":["x"],"stdout":{"capture":{"file":"out.log"}}}`,
			manager.Spec{Tag: "t", Argv: []string{"x"}, Env: inherited,
				Stdout: manager.Output{Kind: manager.Captured, Capture: manager.Capture{File: "out.log", FileBackups: manager.DefaultFileBackups}}}},
		{"a file output keeps its relative path (the manager takes it from Dir)",
			`{"tag":"t","argv":["x"],"cwd":"/srv","stdout":{"file":"o","append":true},"stderr":"stdout"}`,
			manager.Spec{Tag: "t", Argv: []string{"x"}, Dir: "/srv", Env: inherited,
				Stdout: manager.Output{Kind: manager.File, Path: "o", Append: true}, Stderr: manager.Output{Kind: manager.ToStdout}}},
		{"a restart policy without max_restarts gets the manager's default",
			`{"tag":"t","argv":["x"],"restart":{"policy":"on-failure"}}`,
			manager.Spec{Tag: "t", Argv: []string{"x"}, Env: inherited,
				Restart: manager.RestartPolicy{When: manager.RestartOnFailure, MaxRestarts: manager.DefaultMaxRestarts}}},
		{"max_restarts 0 is zero, durations as given",
			`{"tag":"t","argv":["x"],"restart":{"policy":"always","max_restarts":0,"window":0,"backoff":{"initial":0.5,"max":2}}}`,
			manager.Spec{Tag: "t", Argv: []string{"x"}, Env: inherited,
				Restart: manager.RestartPolicy{When: manager.RestartAlways, Window: durp(0),
					InitialBackoff: durp(500 * time.Millisecond), MaxBackoff: durp(2 * time.Second)}}},
		{"policy never", `{"tag":"t","argv":["x"],"restart":{"policy":"never","max_restarts":2}}`,
			manager.Spec{Tag: "t", Argv: []string{"x"}, Env: inherited,
				Restart: manager.RestartPolicy{When: manager.RestartNever, MaxRestarts: 2}}},
		{"daemon with a pid file", `{"tag":"t","argv":["x"],"daemon":true,"pid_file":"run.pid"}`,
			manager.Spec{Tag: "t", Argv: []string{"x"}, Env: inherited, Daemon: true, PidFile: "run.pid"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec, err := toSpecOf(t, c.params)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(spec, c.want) {
				t.Errorf("%s\n got %+v\nwant %+v", c.params, spec, c.want)
			}
		})
	}
}

func TestCreateReadinessMapsOntoSpec(t *testing.T) {
	spec, err := toSpecOf(t, `{"tag":"t","argv":["x"],"ready":{"output":"^up [0-9]+$"}}`)
	if err != nil || spec.Ready == nil || spec.Ready.Output.String() != "^up [0-9]+$" || spec.Ready.Timeout != nil {
		t.Errorf("ready output, no timeout: %+v, %v; want the regexp and the default timeout (nil)", spec.Ready, err)
	}
	spec, err = toSpecOf(t, `{"tag":"t","argv":["x"],"ready":{"tcp":"127.0.0.1:80","timeout":0}}`)
	if err != nil || spec.Ready == nil || spec.Ready.TCP != "127.0.0.1:80" || spec.Ready.Output != nil ||
		spec.Ready.Timeout == nil || *spec.Ready.Timeout != 0 {
		t.Errorf("ready tcp, timeout 0: %+v, %v; want tcp and a zero timeout (check once)", spec.Ready, err)
	}
}

func TestCreateParamsRefusedNamingTheField(t *testing.T) {
	for _, c := range []struct{ params, names string }{
		{`{"argv":["x"]}`, "tag is required"},
		{`{"tag":"t"}`, "argv is required"},
		{`{"tag":"t","argv":[]}`, "argv is required"},
		{`{"tag":"t","argv":["x"],"pid_file":"p"}`, "pid_file needs daemon"},
		{`{"tag":"t","argv":["x"],"stdin":"tty"}`, `stdin must be "null" or "pipe", not "tty"`},
		{`{"tag":"t","argv":["x"],"ready":{"output":"("}}`, "ready.output"},
		{`{"tag":"t","argv":["x"],"restart":{"policy":"sometimes"}}`, "restart.policy"},
		{`{"tag":"t","argv":["x"],"restart":{"max_restarts":-1}}`, "restart.max_restarts"},
		{`{"tag":"t","argv":["x"],"env":{"A=B":"1"}}`, `env name "A=B"`},
	} {
		_, err := toSpecOf(t, c.params)
		var re *jsonrpc.Error
		if !errors.As(err, &re) || re.Code != jsonrpc.CodeInvalidParams || !strings.Contains(re.Message, c.names) {
			t.Errorf("%s: err %v, want -32602 saying %q", c.params, err, c.names)
		}
	}
}
