package rpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"syscall"
	"time"

	"procmgr/manager"
	"procmgr/rpc/jsonrpc"
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
	Restarts  int      `json:"restarts"`
	StartedAt string   `json:"started_at"`
	ExitedAt  *string  `json:"exited_at"`
	Orphans   int      `json:"orphans"`
}

func toProcessInfo(in manager.Info) processInfo {
	pi := processInfo{
		Tag: in.Tag, Argv: in.Argv, Pid: in.Pid, Pgid: in.Pgid,
		State: string(in.State), Alive: in.Alive, Restarts: in.Restarts, Orphans: in.Orphans,
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
		return errors.New(strings.TrimPrefix(err.Error(), manager.ErrInvalid.Error()+": "))
	}
	s.sig = sig
	return nil
}

// MaxDuration bounds every duration a caller may give (a timeout, a
// backoff, the --stop-timeout flag), so that no call can be made to wait
// without bound by a typo.
const MaxDuration = 24 * time.Hour

// Seconds is the one check of a duration given in seconds, on the wire and
// on the command line: finite, 0..MaxDuration. Zero is zero (no wait at
// all), never "the default": the default is what an absent field gives.
func Seconds(secs float64) (time.Duration, error) {
	if !(secs >= 0 && secs <= MaxDuration.Seconds()) { // NaN fails both
		return 0, fmt.Errorf("duration %v s is out of range 0..%v", secs, MaxDuration.Seconds())
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// seconds decodes a duration in seconds, checked by Seconds. JSON has no
// NaN or infinity; a number too large for a float64 (1e999) is refused like
// any other out-of-range one.
type seconds struct{ d time.Duration }

func (s *seconds) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && strings.HasPrefix(te.Value, "number") { // 1e999: beyond float64
			return fmt.Errorf("duration %s s is not a finite number in range 0..%v", bytes.TrimSpace(b), MaxDuration.Seconds())
		}
		return fmt.Errorf("a duration must be a number of seconds")
	}
	d, err := Seconds(f)
	if err != nil {
		return err
	}
	s.d = d
	return nil
}

// output decodes "discard" | "inherit" | "stdout" | "capture" |
// {"file": path, "append": bool} | {"capture": {"size", "file", "file_max_bytes", "file_backups"}}.
type output struct{ o manager.Output }

type captureOptions struct {
	Size         int    `json:"size"`
	File         string `json:"file"`
	FileMaxBytes int64  `json:"file_max_bytes"`
	FileBackups  *int   `json:"file_backups"`
}

// maxCaptureSize bounds one stream's ring.
const maxCaptureSize = 256 << 20

func (o *output) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '{' {
		var f struct {
			File    *string         `json:"file"`
			Append  bool            `json:"append"`
			Capture *captureOptions `json:"capture"`
		}
		// Names are case-sensitive here too: the server's check of names
		// leaves a type with its own UnmarshalJSON to it.
		if err := jsonrpc.Unmarshal(b, &f); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) && te.Field != "" {
				return fmt.Errorf("%q must be %s, not %s", te.Field, jsonrpc.JSONKind(te.Type.Kind()), te.Value)
			}
			return fmt.Errorf("output object: %v", err)
		}
		switch {
		case f.Capture != nil && f.File == nil && !f.Append:
			c := f.Capture
			if c.Size < 0 || c.Size > maxCaptureSize || c.FileMaxBytes < 0 || (c.FileBackups != nil && *c.FileBackups < 0) {
				return fmt.Errorf("capture: size must be 0..%d and file settings non-negative", maxCaptureSize)
			}
			backups := manager.DefaultFileBackups
			if c.FileBackups != nil {
				backups = *c.FileBackups
			}
			o.o = manager.Output{Kind: manager.Captured, Capture: manager.Capture{
				Size: c.Size, File: c.File, FileMaxBytes: c.FileMaxBytes, FileBackups: backups}}
			return nil
		case f.Capture == nil && f.File != nil && *f.File != "":
			o.o = manager.Output{Kind: manager.File, Path: *f.File, Append: f.Append}
			return nil
		}
		return fmt.Errorf(`output object needs either "file": a path, or "capture": {...}`)
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf(`output must be "discard", "inherit", "capture", "stdout" (stderr only) or an object`)
	}
	switch s {
	case "discard":
		o.o = manager.Output{Kind: manager.Discard}
	case "inherit":
		o.o = manager.Output{Kind: manager.Inherit}
	case "stdout":
		o.o = manager.Output{Kind: manager.ToStdout}
	case "capture":
		o.o = manager.Output{Kind: manager.Captured, Capture: manager.Capture{FileBackups: manager.DefaultFileBackups}}
	default:
		return fmt.Errorf(`unknown output %q: want "discard", "inherit", "capture", "stdout" (stderr only) or {"file": path}`, s)
	}
	return nil
}
