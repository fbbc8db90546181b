package manager

import (
	"log/slog"
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

// watchExit returns a channel closed when pid exits (kqueue EVFILT_PROC), or
// nil if it cannot be watched.
func watchExit(pid int, log *slog.Logger) <-chan struct{} {
	kq, err := unix.Kqueue()
	if err != nil {
		return nil
	}
	ev := unix.Kevent_t{Ident: uint64(pid), Filter: unix.EVFILT_PROC, Flags: unix.EV_ADD | unix.EV_ONESHOT, Fflags: unix.NOTE_EXIT}
	if _, err := unix.Kevent(kq, []unix.Kevent_t{ev}, nil, nil); err != nil {
		unix.Close(kq)
		log.Debug("kevent on the sidecar failed; it is watched by its pipe only", "err", err)
		return nil
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer unix.Close(kq)
		out := make([]unix.Kevent_t, 1)
		for {
			n, err := unix.Kevent(kq, nil, out, nil)
			if err == unix.EINTR || (err == nil && n == 0) {
				continue
			}
			return
		}
	}()
	return done
}

// hasExecutable: environments are not read on macOS, so never asked.
func hasExecutable(int) bool { return true }
