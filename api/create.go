package api

import (
	"context"
	"sort"
	"strings"

	"procmgr/manager"
	"procmgr/rpc"
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
}

func (s *service) create(_ context.Context, p createParams) (processInfo, error) {
	tag, err := tagParams{p.Tag}.tag()
	if err != nil {
		return processInfo{}, err
	}
	if len(p.Argv) == 0 {
		return processInfo{}, rpc.Errorf(rpc.CodeInvalidParams, "invalid params: argv is required: a non-empty array of strings")
	}
	spec := manager.Spec{Tag: tag, Argv: p.Argv, Dir: p.Cwd}
	inherit := p.InheritEnv == nil || *p.InheritEnv
	spec.Env, err = buildEnv(inherit, s.opts.Environ, p.Env)
	if err != nil {
		return processInfo{}, err
	}
	if p.Stdout != nil {
		spec.Stdout = p.Stdout.o
	}
	if p.Stderr != nil {
		spec.Stderr = p.Stderr.o
	}
	if p.StopSignal != nil {
		spec.StopSignal = p.StopSignal.sig
	}
	if p.StopTimeout != nil {
		spec.StopTimeout = p.StopTimeout.d
	}
	in, err := s.m.Create(spec)
	if err != nil {
		return processInfo{}, toRPCError(err, tag)
	}
	return toProcessInfo(in), nil
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
			return nil, rpc.Errorf(rpc.CodeInvalidParams, "invalid params: env name %q is not a valid variable name", k)
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
