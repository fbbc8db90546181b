package manager

import (
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"
)

// OutputKind says where a tool's stdout or stderr goes.
type OutputKind int

const (
	Discard  OutputKind = iota // /dev/null (the default)
	Inherit                    // the host's own stream, as handed to the sidecar
	File                       // a file, truncated or appended
	ToStdout                   // stderr only: wherever stdout goes
	Captured                   // kept in a ring (and optionally a rotated file), read with ReadOutput
)

// Output is one stream's destination.
type Output struct {
	Kind    OutputKind
	Path    string  // File only; relative paths are taken from the tool's Dir
	Append  bool    // File only
	Capture Capture // Captured only
}

// Spec describes a tool to start.
type Spec struct {
	Tag  string
	Argv []string // Argv[0] without a slash is looked up in the PATH of Env
	Dir  string   // "" = the sidecar's working directory
	// Env is the tool's whole environment ("K=V"); PROCMGR_TAG and
	// PROCMGR_SESSION are set on top of it.
	Env        []string
	Stdout     Output
	Stderr     Output
	StopSignal syscall.Signal // 0 = SIGTERM
	// StopTimeout is the grace between the stop signal and SIGKILL: nil = the
	// manager's default, 0 = SIGKILL right after the stop signal.
	StopTimeout *time.Duration
	StdinPipe   bool       // stdin is a pipe fed by WriteStdin; else /dev/null
	Ready       *Readiness // nil: Create returns once the tool is exec'd
	Restart     RestartPolicy
	// Daemon: a main process that exits 0 has daemonized; the tool follows
	// the process it left behind (see daemon.go) instead of ending.
	Daemon bool
	// PidFile, with Daemon, names the file where the daemon writes its pid
	// (relative paths are taken from Dir); "" = the oldest adopted member.
	PidFile string
}

// Readiness is what Create waits for before it returns. Exactly one
// condition is set.
type Readiness struct {
	Output  *regexp.Regexp // a line of captured stdout or stderr matches
	Path    string         // this file exists
	TCP     string         // host:port accepts a connection on a socket the tool's tree listens on
	Timeout *time.Duration // nil = defaultReadyTimeout; 0 = check once
}

// defaultReadyTimeout bounds a readiness wait that names no timeout.
const defaultReadyTimeout = 10 * time.Second

// Defaults for what a caller leaves unsaid where the zero value means
// something of its own (0 restarts, 0 backups), so the manager cannot apply
// them itself: the caller maps "absent" onto them.
const (
	// DefaultMaxRestarts is RestartPolicy.MaxRestarts when none is named.
	DefaultMaxRestarts = 5
	// DefaultFileBackups is Capture.FileBackups when none is named.
	DefaultFileBackups = 3
	// DefaultReadBytes is the size a read of output asks for when its caller
	// names none (ReadOutput itself reads up to maxReadOutput for max 0).
	DefaultReadBytes = 1 << 20
)

// RestartWhen says which exits of the main process are followed by a restart.
type RestartWhen int

const (
	RestartNever     RestartWhen = iota
	RestartOnFailure             // a non-zero exit status or a killing signal
	RestartAlways                // any exit not caused by Stop
)

// RestartPolicy brings a tool back after it exits, with exponential backoff
// and jitter. When MaxRestarts restarts have happened inside Window, the next
// exit makes the tool fatal instead.
type RestartPolicy struct {
	When           RestartWhen
	MaxRestarts    int            // restarts allowed inside Window
	Window         *time.Duration // nil = 60 s; 0 = no restart counts against MaxRestarts
	InitialBackoff *time.Duration // nil = 0.5 s; 0 = restart at once
	MaxBackoff     *time.Duration // nil = 30 s
}

// UseDefault, as the timeout of Stop or the grace of Shutdown, stands for
// "the tool's own stop timeout". Zero means no grace at all.
const UseDefault time.Duration = -1

// orDefault is *d, or def when d is nil (absent means the default; zero means zero).
func orDefault(d *time.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return *d
}

func negative(d *time.Duration) bool { return d != nil && *d < 0 }

// maxTagLen is the longest tag, in characters.
const maxTagLen = 128

// validateTag reports whether tag is 1–128 printable characters.
func validateTag(tag string) error {
	if tag == "" {
		return fmt.Errorf("%w: tag is empty", ErrInvalid)
	}
	if !utf8.ValidString(tag) {
		return fmt.Errorf("%w: tag is not valid UTF-8", ErrInvalid)
	}
	if n := utf8.RuneCountInString(tag); n > maxTagLen {
		return fmt.Errorf("%w: tag has %d characters, at most %d are allowed", ErrInvalid, n, maxTagLen)
	}
	for _, r := range tag {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: tag contains the non-printable character %U", ErrInvalid, r)
		}
	}
	return nil
}

func (s *Spec) validate() error {
	if err := validateTag(s.Tag); err != nil {
		return err
	}
	if len(s.Argv) == 0 || s.Argv[0] == "" {
		return fmt.Errorf("%w: argv must name a program", ErrInvalid)
	}
	for _, a := range s.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("%w: argv contains a NUL byte", ErrInvalid)
		}
	}
	for _, kv := range s.Env {
		if strings.IndexByte(kv, 0) >= 0 || !strings.Contains(kv, "=") {
			return fmt.Errorf("%w: environment entry %q is not NAME=value", ErrInvalid, kv)
		}
	}
	if negative(s.StopTimeout) {
		return fmt.Errorf("%w: stop_timeout is negative", ErrInvalid)
	}
	if s.Stdout.Kind == ToStdout {
		return fmt.Errorf("%w: only stderr can go to stdout", ErrInvalid)
	}
	if r := s.Ready; r != nil {
		set := 0
		for _, b := range []bool{r.Output != nil, r.Path != "", r.TCP != ""} {
			if b {
				set++
			}
		}
		if set != 1 {
			return fmt.Errorf("%w: ready needs exactly one of output, path or tcp", ErrInvalid)
		}
		if negative(r.Timeout) {
			return fmt.Errorf("%w: ready.timeout is negative", ErrInvalid)
		}
		if r.Output != nil && s.Stdout.Kind != Captured && s.Stderr.Kind != Captured {
			return fmt.Errorf("%w: ready.output needs stdout or stderr to be captured", ErrInvalid)
		}
	}
	if p := s.Restart; p.MaxRestarts < 0 || negative(p.Window) || negative(p.InitialBackoff) || negative(p.MaxBackoff) {
		return fmt.Errorf("%w: restart settings must not be negative", ErrInvalid)
	}
	if s.PidFile != "" && !s.Daemon {
		return fmt.Errorf("%w: pid_file needs daemon", ErrInvalid)
	}
	return nil
}
