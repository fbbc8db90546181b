package manager

import "golang.org/x/sys/unix"

// watchExit returns a channel closed when pid exits, watched through a pidfd
// (no polling). The error is ESRCH when pid does not exist; any other error
// means it cannot be watched this way (a kernel before 5.3).
func watchExit(pid int) (<-chan struct{}, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, err
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
			return // readable: it exited (or poll failed: treat as gone)
		}
	}()
	return done, nil
}
