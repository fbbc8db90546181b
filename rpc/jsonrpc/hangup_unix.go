//go:build linux || darwin

package jsonrpc

import (
	"io"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pollableFd returns r's descriptor when r is a file, else -1.
func pollableFd(r io.Reader) int {
	sc, ok := r.(syscall.Conn)
	if !ok {
		return -1
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	if rc.Control(func(f uintptr) { fd = int(f) }) != nil {
		return -1
	}
	return fd
}

// hungUp waits up to d for the peer to close its end of fd. POLLHUP is
// reported for a pipe whose writers are all gone even while unread bytes
// remain in it, which is the point: the reader is not reading them.
func hungUp(fd int, d time.Duration) bool {
	fds := []unix.PollFd{{Fd: int32(fd)}} // no events: only POLLHUP/POLLERR
	n, err := unix.Poll(fds, int(d/time.Millisecond))
	return err == nil && n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0
}
