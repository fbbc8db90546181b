package manager

import (
	"os"
	"syscall"
)

// macOS has no parent-death signal: the watchdog learns of the sidecar's death
// from its pipe and a kqueue on the sidecar's pid. This signal is only
// notified, never armed.
const watchdogDeathSignal = syscall.SIGWINCH

func selfExe() string {
	if exe, err := os.Executable(); err == nil {
		return exe
	}
	return os.Args[0]
}

func watchdogAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }

// hasExecutable: environments are not read on macOS, so never asked.
func hasExecutable(int) bool { return true }
