package manager

import (
	"bytes"
	"strings"
	"time"
)

// Environment variables that mark a tool and every descendant that keeps its
// environment, so members that left the tool's process group can still be found.
const (
	envTag     = "PROCMGR_TAG"
	envSession = "PROCMGR_SESSION"
)

// withoutMarks returns env without PROCMGR_TAG and PROCMGR_SESSION: a tool's
// environment gets the sidecar's own marks instead of the caller's, and the
// watchdog gets none (no sweep, this session's or an outer one's, takes it for
// a tool).
func withoutMarks(env []string) []string {
	out := make([]string, 0, len(env)+2) // room for a tool's two marks
	for _, kv := range env {
		if strings.HasPrefix(kv, envTag+"=") || strings.HasPrefix(kv, envSession+"=") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// envMark is what a process's environment says of it: ours when its
// PROCMGR_SESSION names session (any of them, should it carry several), tag
// its last PROCMGR_TAG, set only when ours.
type envMark struct {
	ours bool
	tag  string
}

// readEnvMark reads pid's environment and returns its mark for session. The
// one rule for an environment that reads empty, used by the process table and
// the watchdog alike: known is false for a user process (one with an
// executable; a kernel thread has none, and no environment ever), which may be
// in the middle of an execve — read it again (see envSettle) rather than take
// it as not ours. One that cannot be read at all (gone, another user's) is
// known not to be ours.
func readEnvMark(pid int, session string) (mark envMark, known bool) {
	env, err := host.environ(pid)
	if err != nil {
		return envMark{}, true
	}
	if len(env) == 0 {
		return envMark{}, !hasExecutable(pid)
	}
	return parseEnvMark(env, session), true
}

// parseEnvMark reads the marks in a NUL-separated environment block.
func parseEnvMark(env []byte, session string) envMark {
	var m envMark
	for _, kv := range bytes.Split(env, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(envSession+"=")); ok {
			m.ours = m.ours || string(v) == session
		} else if v, ok := bytes.CutPrefix(kv, []byte(envTag+"=")); ok {
			m.tag = string(v)
		}
	}
	if !m.ours {
		m.tag = ""
	}
	return m
}

// emptyEnvirons remembers when each process whose environment read empty
// (readEnvMark's known false) was first seen so.
type emptyEnvirons map[procKey]time.Time

// settling records that k's environment read empty at now and reports
// whether that is still within envSettle of the first such reading: then it
// is to be read again, not yet taken as not ours.
func (u emptyEnvirons) settling(k procKey, now time.Time) bool {
	first, ok := u[k]
	if !ok {
		first = now
		u[k] = first
	}
	return now.Sub(first) < envSettle
}
