package manager

import (
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// platform is the seam between the portable life-cycle code and the OS.
// platform_linux.go and platform_darwin.go each provide one.
type platform interface {
	// prepare readies the sidecar process itself (on Linux: child subreaper,
	// so orphaned descendants of tools come back to it).
	prepare() error
	// toolAttr is how a tool is forked: leader of its own process group, and
	// where the OS has it, a parent-death SIGKILL and a cgroup (fd < 0: none).
	toolAttr(cgroupFD int) *syscall.SysProcAttr
	// processes lists every process the OS shows, zombies marked.
	processes() ([]procEntry, error)
	// process describes one process; false when it does not exist.
	process(pid int) (procEntry, bool)
	// environ returns the NUL-separated environment of pid, or an error when
	// the OS does not show it.
	environ(pid int) ([]byte, error)
	// startClock is the clock procEntry.start is read from, now: a process
	// started later shows a start no smaller than this reading.
	startClock() uint64
}

// procEntry is one process as the OS reports it.
type procEntry struct {
	pid, ppid, pgid int
	start           uint64 // start time (see platform.startClock): with pid, names the process uniquely
	zombie          bool
}

// processStart is pid's start time as procEntry.start gives it: with pid, it
// names a process in a record that outlives it (litter.go).
func processStart(pid int) (uint64, bool) {
	e, ok := host.process(pid)
	return e.start, ok
}

// closeOnExecAbove2 marks every open descriptor above 2 close-on-exec, so
// that a tool inherits nothing the host handed the sidecar (the fds named by
// --stdout-fd/--stderr-fd, or any the host leaked). fdDir lists the process's
// descriptors (/proc/self/fd, /dev/fd).
func closeOnExecAbove2(fdDir string) error {
	d, err := os.Open(fdDir)
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	for _, name := range names {
		if fd, err := strconv.Atoi(name); err == nil && fd > 2 {
			unix.CloseOnExec(fd) // the fd of the listing itself is gone: EBADF, harmless
		}
	}
	return nil
}
