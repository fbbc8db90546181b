package rpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"procmgr/manager"
	"procmgr/rpc/jsonrpc"
)

// fuzzEnviron is the sidecar environment the fuzzed creates inherit.
func fuzzEnviron() []string {
	return []string{"PATH=/usr/bin:/bin", "HOME=/root", "DUP=first", "DUP=second", "EMPTY=", "NOEQUALS"}
}

// FuzzCreateParamsToSpec feeds arbitrary create params through the mapping
// onto manager.Spec (argv, env, cwd, outputs, ready, restart). Whatever the
// input: no panic, and either an invalid-params error or a Spec that says
// exactly what the params asked for, within the protocol's bounds. Seeds:
// every kind of valid field below, and in testdata/fuzz/FuzzCreateParamsToSpec
// the create params of the end-to-end bad-input tests (bad-input-*: from
// tests/methods_test.go invalidParamsCases; some fail in the decoding, some
// only in the manager) and what fuzzing found worth keeping.
func FuzzCreateParamsToSpec(f *testing.F) {
	for _, s := range []string{
		`{"tag":"t","argv":["/bin/true"]}`,
		`{"tag":"t","argv":["sleep","1"],"cwd":"/tmp","env":{"A":"1","PATH":null},"inherit_env":false}`,
		`{"tag":"t","argv":["x"],"clear_env":true,"env":{"B":"2"},"stdin":"pipe","stop_signal":"TERM","stop_timeout":0}`,
		`{"tag":"t","argv":["x"],"stdout":"capture","stderr":"stdout","ready":{"output":"^up$","timeout":5}}`,
		`{"tag":"t","argv":["x"],"stdout":{"capture":{"size":1024,"file":"log","file_max_bytes":10,"file_backups":0}}}`,
		`{"tag":"t","argv":["x"],"stdout":{"file":"out","append":true},"stderr":"inherit","ready":{"tcp":"127.0.0.1:1"}}`,
		`{"tag":"t","argv":["x"],"restart":{"policy":"on-failure","max_restarts":0,"window":60,"backoff":{"initial":0.5,"max":30}}}`,
		`{"tag":"t","argv":["x"],"restart":{"policy":"always"},"ready":{"path":"/tmp/r"},"stop_signal":9}`,
		`{"tag":"t","argv":["x"],"env":{"":"x"}}`,
		`{"tag":"t","argv":["x"],"env":{"A=B":"x"}}`,
		`{"tag":"t","argv":["x"],"env":{"A":"x\u0000y"}}`,
		`{"tag":"t","argv":["x"],"ready":{"output":"("}}`,
		`{"tag":"t","argv":["x"],"restart":{"policy":"sometimes"}}`,
		`{"tag":"t","argv":["x"],"restart":{"max_restarts":-1}}`,
		`{"tag":"t","argv":["x"],"stdin":"tty"}`,
		`{"tag":"t","argv":["x"],"stop_timeout":1e400}`,
		`{"tag":"t","argv":["x"],"stop_signal":1.5}`,
		`{"tag":"t","argv":["x"],"stdout":{"capture":{"size":-1}}}`,
		`{"tag":"t","argv":["x"],"stdout":{"capture":{"size":268435457}}}`,
		`{"tag":"t","argv":["x"],"stdout":{"capture":{},"file":"f"}}`,
		`{"tag":"t","argv":["x"],"stdout":{"file":""}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var p createParams
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields() // as the server decodes params
		if dec.Decode(&p) != nil {
			return // not create params at all: the decoding is package jsonrpc's to fuzz
		}
		spec, err := p.toSpec(fuzzEnviron)
		if err != nil {
			var re *jsonrpc.Error
			if !errors.As(err, &re) || re.Code != jsonrpc.CodeInvalidParams || !strings.HasPrefix(re.Message, "invalid params: ") {
				t.Fatalf("error %#v is not an invalid-params error", err)
			}
			return
		}
		checkSpec(t, &p, spec)
	})
}

// checkSpec holds spec to what p asked for.
func checkSpec(t *testing.T, p *createParams, spec manager.Spec) {
	t.Helper()
	if p.Tag == nil || spec.Tag != *p.Tag {
		t.Fatalf("tag %q from params %v", spec.Tag, p.Tag)
	}
	if len(spec.Argv) == 0 || !slices.Equal(spec.Argv, p.Argv) {
		t.Fatalf("argv %q from %q", spec.Argv, p.Argv)
	}
	if spec.Dir != p.Cwd {
		t.Fatalf("dir %q from cwd %q", spec.Dir, p.Cwd)
	}
	checkEnv(t, p, spec.Env)
	for _, d := range []struct {
		name string
		v    *time.Duration // nil: absent, the manager's default
	}{
		{"stop_timeout", spec.StopTimeout}, {"restart.window", spec.Restart.Window},
		{"restart.backoff.initial", spec.Restart.InitialBackoff}, {"restart.backoff.max", spec.Restart.MaxBackoff},
	} {
		if d.v != nil && (*d.v < 0 || *d.v > MaxDuration) {
			t.Fatalf("%s = %v, outside 0..%v", d.name, *d.v, MaxDuration)
		}
	}
	if (p.StopTimeout != nil) != (spec.StopTimeout != nil) {
		t.Fatalf("stop_timeout %v from %v", spec.StopTimeout, p.StopTimeout)
	}
	if (p.StopSignal != nil) != (spec.StopSignal != 0) || spec.StopSignal < 0 || spec.StopSignal > 64 {
		t.Fatalf("stop signal %d from %v", spec.StopSignal, p.StopSignal)
	}
	if (p.Stdin != nil && *p.Stdin == "pipe") != spec.StdinPipe {
		t.Fatalf("stdin pipe %v from %v", spec.StdinPipe, p.Stdin)
	}
	for _, o := range []manager.Output{spec.Stdout, spec.Stderr} {
		checkOutput(t, o)
	}
	if (p.Ready != nil) != (spec.Ready != nil) {
		t.Fatalf("ready %v from %v", spec.Ready, p.Ready)
	}
	if r := spec.Ready; r != nil {
		if (r.Timeout != nil && (*r.Timeout < 0 || *r.Timeout > MaxDuration)) || r.Path != p.Ready.Path || r.TCP != p.Ready.TCP ||
			(r.Output != nil) != (p.Ready.Output != nil) {
			t.Fatalf("ready %+v from %+v", r, p.Ready)
		}
	}
	if rp := spec.Restart; rp.MaxRestarts < 0 || rp.When < manager.RestartNever || rp.When > manager.RestartAlways ||
		(p.Restart == nil && rp.When != manager.RestartNever) {
		t.Fatalf("restart %+v from %+v", rp, p.Restart)
	}
}

// checkEnv: every entry is NAME=value with a valid, unique name; an override
// with a value is there, one with null is not; without inheritance nothing
// else is.
func checkEnv(t *testing.T, p *createParams, env []string) {
	t.Helper()
	seen := map[string]string{}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.ContainsRune(k, 0) {
			t.Fatalf("environment entry %q is not NAME=value", kv)
		}
		if _, dup := seen[k]; dup {
			t.Fatalf("%s set twice in %q", k, env)
		}
		seen[k] = v
	}
	for k, v := range p.Env {
		got, ok := seen[k]
		switch {
		case v == nil && ok:
			t.Fatalf("%s removed by null is in the environment", k)
		case v != nil && (!ok || got != *v):
			t.Fatalf("%s=%q asked, environment has %q (%v)", k, *v, got, ok)
		}
	}
	inherit := (p.InheritEnv == nil || *p.InheritEnv) && !p.ClearEnv
	if !inherit && len(seen) != len(env) {
		t.Fatalf("not inherited, yet %d entries for %d names", len(env), len(seen))
	}
	if !inherit {
		for k := range seen {
			if v, ok := p.Env[k]; !ok || v == nil {
				t.Fatalf("%s is in an environment that inherits nothing and did not ask for it", k)
			}
		}
	}
}

func checkOutput(t *testing.T, o manager.Output) {
	t.Helper()
	switch o.Kind {
	case manager.Discard, manager.Inherit, manager.ToStdout:
	case manager.File:
		if o.Path == "" {
			t.Fatalf("file output without a path: %+v", o)
		}
	case manager.Captured:
		c := o.Capture
		if c.Size < 0 || c.Size > maxCaptureSize || c.FileMaxBytes < 0 || c.FileBackups < 0 {
			t.Fatalf("capture settings out of range: %+v", c)
		}
	default:
		t.Fatalf("unknown output kind %d", o.Kind)
	}
	if o.Kind != manager.File && o.Path != "" {
		t.Fatalf("path %q on a non-file output %+v", o.Path, o)
	}
}
