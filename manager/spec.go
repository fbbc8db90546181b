package manager

import (
	"fmt"
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
)

// Output is one stream's destination.
type Output struct {
	Kind   OutputKind
	Path   string // File only; relative paths are taken from the tool's Dir
	Append bool   // File only
}

// Spec describes a tool to start.
type Spec struct {
	Tag  string
	Argv []string // Argv[0] without a slash is looked up in the PATH of Env
	Dir  string   // "" = the sidecar's working directory
	// Env is the tool's whole environment ("K=V"); PROCMGR_TAG and
	// PROCMGR_SESSION are set on top of it.
	Env         []string
	Stdout      Output
	Stderr      Output
	StopSignal  syscall.Signal // 0 = SIGTERM
	StopTimeout time.Duration  // 0 = the manager's default
}

// MaxTagLen is the longest tag, in characters.
const MaxTagLen = 128

// ValidateTag reports whether tag is 1–128 printable characters.
func ValidateTag(tag string) error {
	if tag == "" {
		return fmt.Errorf("%w: tag is empty", ErrInvalid)
	}
	if !utf8.ValidString(tag) {
		return fmt.Errorf("%w: tag is not valid UTF-8", ErrInvalid)
	}
	if n := utf8.RuneCountInString(tag); n > MaxTagLen {
		return fmt.Errorf("%w: tag has %d characters, at most %d are allowed", ErrInvalid, n, MaxTagLen)
	}
	for _, r := range tag {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: tag contains the non-printable character %U", ErrInvalid, r)
		}
	}
	return nil
}

func (s *Spec) validate() error {
	if err := ValidateTag(s.Tag); err != nil {
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
	if s.StopTimeout < 0 {
		return fmt.Errorf("%w: stop_timeout is negative", ErrInvalid)
	}
	if s.Stdout.Kind == ToStdout {
		return fmt.Errorf("%w: only stderr can go to stdout", ErrInvalid)
	}
	return nil
}
