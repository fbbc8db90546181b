package manager

import (
	"os"
	"strconv"
	"syscall"
)

// watchdogDeathSignal is the watchdog's parent-death signal. SIGWINCH is
// ignored by default, so one that arrives before the Go runtime has installed
// its handlers cannot kill the watchdog; a process without a terminal never
// gets it otherwise, and it is checked against getppid anyway.
const watchdogDeathSignal = syscall.SIGWINCH

// selfExe names this very binary even if its file was replaced or deleted
// since the sidecar started.
func selfExe() string { return "/proc/self/exe" }

// watchdogAttr: a session and process group of its own, and a parent-death
// signal bound (through the spawner thread) to the sidecar's death.
func watchdogAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true, Pdeathsig: watchdogDeathSignal}
}

// hasExecutable tells a user process from a kernel thread, whose exe link
// does not resolve.
func hasExecutable(pid int) bool {
	_, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	return err == nil
}
