package manager

import "golang.org/x/sys/unix"

// unreapedChild reports whether pid is a child of this process that has not
// been reaped (alive, or a zombie), without reaping it.
func unreapedChild(pid int) bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	return err == nil
}
