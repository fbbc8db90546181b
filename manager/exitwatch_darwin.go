package manager

import "golang.org/x/sys/unix"

// watchExit returns a channel closed when pid exits, watched through a kqueue
// EVFILT_PROC NOTE_EXIT filter (no polling). The error is ESRCH when pid does
// not exist.
func watchExit(pid int) (<-chan struct{}, error) {
	kq, err := unix.Kqueue()
	if err != nil {
		return nil, err
	}
	ev := unix.Kevent_t{Ident: uint64(pid), Filter: unix.EVFILT_PROC, Flags: unix.EV_ADD | unix.EV_ONESHOT, Fflags: unix.NOTE_EXIT}
	if _, err := unix.Kevent(kq, []unix.Kevent_t{ev}, nil, nil); err != nil {
		unix.Close(kq)
		return nil, err
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
	return done, nil
}
