package manager

import (
	"log/slog"

	"golang.org/x/sys/unix"
)

// watchHost on macOS: no parent-death signal exists; a kqueue EVFILT_PROC
// NOTE_EXIT filter on hostPid reports its exit.
func watchHost(hostPid int, report func(string), log *slog.Logger) {
	if hostPid <= 1 {
		return
	}
	kq, err := unix.Kqueue()
	if err != nil {
		log.Warn("kqueue unavailable; host pid not watched", "err", err)
		return
	}
	ev := unix.Kevent_t{Ident: uint64(hostPid), Filter: unix.EVFILT_PROC, Flags: unix.EV_ADD | unix.EV_ONESHOT, Fflags: unix.NOTE_EXIT}
	if _, err := unix.Kevent(kq, []unix.Kevent_t{ev}, nil, nil); err != nil {
		unix.Close(kq)
		if err == unix.ESRCH {
			report("host pid does not exist")
			return
		}
		log.Warn("kevent on host pid failed", "err", err)
		return
	}
	go func() {
		defer unix.Close(kq)
		out := make([]unix.Kevent_t, 1)
		for {
			n, err := unix.Kevent(kq, nil, out, nil)
			if err == unix.EINTR || (err == nil && n == 0) {
				continue
			}
			if err != nil {
				log.Warn("kevent wait failed", "err", err)
				return
			}
			report("host pid exited")
			return
		}
	}()
}
