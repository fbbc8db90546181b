package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"syscall"
	"time"

	"procmgr/manager"
)

// processInfo is ProcessInfo on the wire.
type processInfo struct {
	Tag       string   `json:"tag"`
	Argv      []string `json:"argv"`
	Pid       int      `json:"pid"`
	Pgid      int      `json:"pgid"`
	State     string   `json:"state"`
	Alive     bool     `json:"alive"`
	ExitCode  *int     `json:"exit_code"`
	Signal    *string  `json:"signal"`
	StartedAt string   `json:"started_at"`
	ExitedAt  *string  `json:"exited_at"`
}

func toProcessInfo(in manager.Info) processInfo {
	pi := processInfo{
		Tag: in.Tag, Argv: in.Argv, Pid: in.Pid, Pgid: in.Pgid,
		State: string(in.State), Alive: in.Alive,
		StartedAt: in.StartedAt.UTC().Format(time.RFC3339Nano),
	}
	if in.Exited {
		at := in.ExitedAt.UTC().Format(time.RFC3339Nano)
		pi.ExitedAt = &at
		if in.Signal != 0 {
			name := manager.SignalName(in.Signal)
			pi.Signal = &name
		} else {
			code := in.ExitCode
			pi.ExitCode = &code
		}
	}
	return pi
}

// signal decodes "SIGTERM", "TERM" or 15.
type signal struct{ sig syscall.Signal }

func (s *signal) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	var text string
	switch x := v.(type) {
	case string:
		text = x
	case float64:
		if x != math.Trunc(x) {
			return fmt.Errorf("signal %v is not an integer", x)
		}
		text = fmt.Sprint(int64(x))
	default:
		return fmt.Errorf("signal must be a name like \"SIGTERM\" or a number")
	}
	sig, err := manager.ParseSignal(text)
	if err != nil {
		return err
	}
	s.sig = sig
	return nil
}

// seconds decodes a non-negative number of seconds, at most maxTimeout.
type seconds struct{ d time.Duration }

func (s *seconds) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("a duration must be a number of seconds")
	}
	if f < 0 || math.IsNaN(f) || f > maxTimeout.Seconds() {
		return fmt.Errorf("duration %v s is out of range 0..%v", f, maxTimeout.Seconds())
	}
	s.d = time.Duration(f * float64(time.Second))
	return nil
}

// output decodes "discard" | "inherit" | "stdout" | {"file": path, "append": bool}.
type output struct{ o manager.Output }

func (o *output) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '{' {
		var f struct {
			File   *string `json:"file"`
			Append bool    `json:"append"`
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			return fmt.Errorf("output object: %v", err)
		}
		if f.File == nil || *f.File == "" {
			return fmt.Errorf(`output object needs "file": a path`)
		}
		o.o = manager.Output{Kind: manager.File, Path: *f.File, Append: f.Append}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf(`output must be "discard", "inherit", "stdout" (stderr only) or {"file": path, "append": bool}`)
	}
	switch s {
	case "discard":
		o.o = manager.Output{Kind: manager.Discard}
	case "inherit":
		o.o = manager.Output{Kind: manager.Inherit}
	case "stdout":
		o.o = manager.Output{Kind: manager.ToStdout}
	default:
		return fmt.Errorf(`unknown output %q: want "discard", "inherit", "stdout" (stderr only) or {"file": path}`, s)
	}
	return nil
}
