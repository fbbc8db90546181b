package rpc

import (
	"context"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"procmgr/manager"
	"procmgr/rpc/jsonrpc"
)

type createParams struct {
	Tag         *string            `json:"tag"`
	Argv        []string           `json:"argv"`
	Cwd         string             `json:"cwd"`
	Env         map[string]*string `json:"env"` // a null value removes the variable
	InheritEnv  *bool              `json:"inherit_env"`
	Stdout      *output            `json:"stdout"`
	Stderr      *output            `json:"stderr"`
	StopSignal  *signal            `json:"stop_signal"`
	StopTimeout *seconds           `json:"stop_timeout"`
	ClearEnv    bool               `json:"clear_env"` // start from an empty environment
	Stdin       *string            `json:"stdin"`     // "null" (default) or "pipe"
	Ready       *readyParams       `json:"ready"`
	Restart     *restartParams     `json:"restart"`
	Daemon      bool               `json:"daemon"`   // follow what a launcher that exits 0 leaves behind
	PidFile     string             `json:"pid_file"` // with daemon: where the daemon writes its pid
}

// WaitsLong: a create with readiness waits for it (jsonrpc.LongWaiter).
func (p createParams) WaitsLong() bool { return p.Ready != nil }

type readyParams struct {
	Output  *string  `json:"output"` // a regular expression (RE2 syntax)
	Path    string   `json:"path"`
	TCP     string   `json:"tcp"`
	Timeout *seconds `json:"timeout"`
}

type restartParams struct {
	Policy      string   `json:"policy"`
	MaxRestarts *int     `json:"max_restarts"`
	Window      *seconds `json:"window"`
	Backoff     *struct {
		Initial *seconds `json:"initial"`
		Max     *seconds `json:"max"`
	} `json:"backoff"`
}

func (p *readyParams) toSpec() (*manager.Readiness, error) {
	r := &manager.Readiness{Path: p.Path, TCP: p.TCP}
	if p.Output != nil {
		re, err := regexp.Compile(*p.Output)
		if err != nil {
			return nil, jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "invalid params: ready.output: %v", err)
		}
		r.Output = re
	}
	if p.Timeout != nil {
		r.Timeout = &p.Timeout.d
	}
	return r, nil
}

func (p *restartParams) toSpec() (manager.RestartPolicy, error) {
	var r manager.RestartPolicy
	switch p.Policy {
	case "never", "":
		r.When = manager.RestartNever
	case "on-failure":
		r.When = manager.RestartOnFailure
	case "always":
		r.When = manager.RestartAlways
	default:
		return r, jsonrpc.Errorf(jsonrpc.CodeInvalidParams, `invalid params: restart.policy must be "never", "on-failure" or "always", not %q`, p.Policy)
	}
	r.MaxRestarts = manager.DefaultMaxRestarts
	if p.MaxRestarts != nil {
		if *p.MaxRestarts < 0 {
			return r, jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "invalid params: restart.max_restarts must not be negative")
		}
		r.MaxRestarts = *p.MaxRestarts
	}
	if p.Window != nil {
		r.Window = &p.Window.d
	}
	if b := p.Backoff; b != nil {
		if b.Initial != nil {
			r.InitialBackoff = &b.Initial.d
		}
		if b.Max != nil {
			r.MaxBackoff = &b.Max.d
		}
	}
	return r, nil
}

// reserveCreate is create's first step, taken on the reading goroutine in
// the order of the input (jsonrpc.HandleOrdered): it maps the params and
// reserves the tag, so that a stop of the tag read after this create waits
// for its tool instead of answering no such tag. Release is the undo of a
// create refused as busy.
func (s *service) reserveCreate(p createParams) (*manager.Reservation, func(), error) {
	spec, err := p.toSpec(s.opts.Environ)
	if err != nil {
		return nil, nil, err
	}
	r, err := s.m.Reserve(spec)
	if err != nil {
		return nil, nil, toRPCError(err, spec.Tag)
	}
	return r, r.Release, nil
}

// create starts the tool reserveCreate reserved.
func (s *service) create(ctx context.Context, p createParams, r *manager.Reservation) (processInfo, error) {
	// The connection's end must not abandon a readiness wait half way: the
	// tool would be left half-created. Its own timeout bounds it.
	in, err := r.Create(context.WithoutCancel(ctx))
	if err != nil {
		return processInfo{}, toRPCError(err, *p.Tag)
	}
	return toProcessInfo(in), nil
}

// toSpec maps create's params onto the manager's Spec; environ is the
// sidecar's environment, the base of an inherited one. It starts nothing, so
// it can be fuzzed (create_fuzz_test.go). Its errors are invalid-params.
func (p *createParams) toSpec(environ func() []string) (manager.Spec, error) {
	tag, err := tagParams{p.Tag}.tag()
	if err != nil {
		return manager.Spec{}, err
	}
	if len(p.Argv) == 0 {
		return manager.Spec{}, jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "invalid params: argv is required: a non-empty array of strings")
	}
	spec := manager.Spec{Tag: tag, Argv: p.Argv, Dir: p.Cwd, Daemon: p.Daemon, PidFile: p.PidFile}
	if p.PidFile != "" && !p.Daemon {
		return manager.Spec{}, jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "invalid params: pid_file needs daemon: true")
	}
	inherit := (p.InheritEnv == nil || *p.InheritEnv) && !p.ClearEnv
	spec.Env, err = buildEnv(inherit, environ, p.Env)
	if err != nil {
		return manager.Spec{}, err
	}
	if p.Stdout != nil {
		spec.Stdout = p.Stdout.o
	}
	if p.Stderr != nil {
		spec.Stderr = p.Stderr.o
	}
	// A relative capture file is taken from the tool's cwd, like every
	// other path of a create (the manager opens it in the sidecar's).
	for _, o := range []*manager.Output{&spec.Stdout, &spec.Stderr} {
		if f := o.Capture.File; f != "" && !filepath.IsAbs(f) && spec.Dir != "" {
			o.Capture.File = filepath.Join(spec.Dir, f)
		}
	}
	if p.StopSignal != nil {
		spec.StopSignal = p.StopSignal.sig
	}
	if p.StopTimeout != nil {
		spec.StopTimeout = &p.StopTimeout.d
	}
	if p.Stdin != nil {
		switch *p.Stdin {
		case "null":
		case "pipe":
			spec.StdinPipe = true
		default:
			return manager.Spec{}, jsonrpc.Errorf(jsonrpc.CodeInvalidParams, `invalid params: stdin must be "null" or "pipe", not %q`, *p.Stdin)
		}
	}
	if p.Ready != nil {
		if spec.Ready, err = p.Ready.toSpec(); err != nil {
			return manager.Spec{}, err
		}
	}
	if p.Restart != nil {
		if spec.Restart, err = p.Restart.toSpec(); err != nil {
			return manager.Spec{}, err
		}
	}
	return spec, nil
}

// buildEnv starts from the sidecar's environment (inherit) or from nothing,
// and applies overrides: a value sets a variable, null removes it.
func buildEnv(inherit bool, environ func() []string, overrides map[string]*string) ([]string, error) {
	vars := map[string]string{}
	var order []string
	if inherit {
		for _, kv := range environ() {
			k, v, _ := strings.Cut(kv, "=")
			if _, seen := vars[k]; !seen {
				order = append(order, k)
			}
			vars[k] = v
		}
	}
	keys := make([]string, 0, len(overrides))
	for k := range overrides {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "invalid params: env name %q is not a valid variable name", k)
		}
		v := overrides[k]
		if v == nil {
			delete(vars, k)
			continue
		}
		if _, seen := vars[k]; !seen {
			order = append(order, k)
		}
		vars[k] = *v
	}
	env := make([]string, 0, len(vars))
	for _, k := range order {
		if v, ok := vars[k]; ok {
			env = append(env, k+"="+v)
		}
	}
	return env, nil
}
