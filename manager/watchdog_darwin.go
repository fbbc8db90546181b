package manager

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
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

// processStart is pid's start time as procEntry.start gives it.
func processStart(pid int) (uint64, bool) {
	kp, err := unix.SysctlKinfoProc("kern.proc.pid", pid)
	if err != nil {
		return 0, false
	}
	return uint64(kp.Proc.P_starttime.Sec)*1e6 + uint64(kp.Proc.P_starttime.Usec), true
}

// hasExecutable: environments are not read on macOS, so never asked.
func hasExecutable(int) bool { return true }
