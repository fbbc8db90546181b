package manager

import (
	"log/slog"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
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

// processStart is pid's start time as procEntry.start gives it.
func processStart(pid int) (uint64, bool) {
	e, ok := readStat(pid, make([]byte, 1024))
	return e.start, ok
}

// watchExit returns a channel closed when pid exits, watched through a pidfd,
// or nil where pidfd_open is not available.
func watchExit(pid int, log *slog.Logger) <-chan struct{} {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		log.Debug("pidfd_open unavailable; the sidecar is watched by its pipe only", "err", err)
		return nil
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer unix.Close(fd)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds, -1)
			if err == unix.EINTR || (err == nil && n == 0) {
				continue
			}
			if err != nil {
				log.Warn("poll on the sidecar's pidfd failed", "err", err)
			}
			return
		}
	}()
	return done
}

// hasExecutable tells a user process from a kernel thread, whose exe link
// does not resolve.
func hasExecutable(pid int) bool {
	_, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	return err == nil
}
