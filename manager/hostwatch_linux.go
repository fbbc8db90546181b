package manager

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// parentDeathSignal is what the kernel sends the sidecar when the thread that
// forked it exits. A dedicated signal keeps it apart from a real SIGTERM.
const parentDeathSignal = syscall.SIGUSR2

// watchHost arms two watches on Linux:
//   - a parent-death signal on the sidecar itself. It fires when the *thread*
//     that spawned the sidecar exits, which is not always the host's death
//     (a Python thread that started the sidecar may end), so it counts only
//     if our parent has really changed;
//   - a pidfd on hostPid, readable when that process exits (pidfd_open; on
//     kernels without it, a kill(pid, 0) probe once a second).
func watchHost(hostPid int, report func(string), log *slog.Logger) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, parentDeathSignal)
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(parentDeathSignal), 0, 0, 0); err != nil {
		log.Warn("parent-death signal not armed", "err", err)
	}
	// Read after arming: a parent that died before is caught by the pidfd
	// below (pidfd_open fails with ESRCH), not by this signal.
	parent := os.Getppid()
	go func() {
		for range sigs {
			if os.Getppid() != parent {
				report("parent-death signal")
				return
			}
			log.Debug("parent-death signal ignored: the spawning thread exited, the parent lives")
		}
	}()

	if hostPid <= 1 {
		return
	}
	fd, err := unix.PidfdOpen(hostPid, 0)
	switch {
	case err == unix.ESRCH:
		report("host pid does not exist")
		return
	case err != nil:
		log.Debug("pidfd_open unavailable; probing the host pid once a second", "err", err)
		go func() {
			for unix.Kill(hostPid, 0) != unix.ESRCH {
				time.Sleep(time.Second)
			}
			report("host pid gone")
		}()
		return
	}
	go func() {
		defer unix.Close(fd)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds, -1)
			if err == unix.EINTR || (err == nil && n == 0) {
				continue
			}
			if err != nil {
				log.Warn("poll on host pidfd failed", "err", err)
				return
			}
			report("host pid exited")
			return
		}
	}()
}
