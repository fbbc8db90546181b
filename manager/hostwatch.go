package manager

import (
	"errors"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// WatchHost reports, once, that the host process hostPid has died, by
// whichever independent signal notices first: the host pid's exit (a pidfd
// on Linux, a kqueue on macOS) or, on Linux, the parent-death signal (see
// hostwatch_linux.go). The value received names the signal. EOF on stdin,
// the third signal, is the transport's to notice.
func WatchHost(hostPid int, log *slog.Logger) <-chan string {
	gone := make(chan string, 1)
	var once sync.Once
	report := func(reason string) {
		once.Do(func() {
			log.Info("host is gone", "host_pid", hostPid, "noticed_by", reason)
			gone <- reason
		})
	}
	armParentDeathSignal(report, log)
	if hostPid > 1 {
		watchHostPid(hostPid, report, log)
	}
	return gone
}

func watchHostPid(hostPid int, report func(string), log *slog.Logger) {
	exit, err := watchExit(hostPid)
	switch {
	case errors.Is(err, syscall.ESRCH):
		report("host pid does not exist")
	case err != nil:
		log.Debug("host pid cannot be watched; probing it once a second", "err", err)
		go func() {
			for unix.Kill(hostPid, 0) != unix.ESRCH {
				time.Sleep(time.Second)
			}
			report("host pid gone")
		}()
	default:
		go func() {
			<-exit
			report("host pid exited")
		}()
	}
}
