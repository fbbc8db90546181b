package manager

import (
	"errors"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// macOS has no parent-death signal, no subreaper and no cgroups: a tool is
// its own process-group leader, and containment rests on the sidecar noticing
// the host's death (stdin EOF, kqueue on the host pid). See docs/containment.md.
type darwinPlatform struct{}

var host platform = darwinPlatform{}

func (darwinPlatform) prepare() error { return closeOnExecAbove2("/dev/fd") }

func (darwinPlatform) toolAttr(int) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

func (darwinPlatform) processes() ([]procEntry, error) {
	kps, err := unix.SysctlKinfoProcSlice("kern.proc.all")
	if err != nil {
		return nil, err
	}
	out := make([]procEntry, 0, len(kps))
	for i := range kps {
		out = append(out, entryOf(&kps[i]))
	}
	return out, nil
}

func (darwinPlatform) process(pid int) (procEntry, bool) {
	kp, err := unix.SysctlKinfoProc("kern.proc.pid", pid)
	if err != nil || int(kp.Proc.P_pid) != pid {
		return procEntry{}, false
	}
	return entryOf(kp), true
}

// startClock is the wall clock in microseconds, as kinfo_proc's
// p_starttime gives a start.
func (darwinPlatform) startClock() uint64 {
	return uint64(time.Now().UnixMicro())
}

func entryOf(kp *unix.KinfoProc) procEntry {
	return procEntry{
		pid:    int(kp.Proc.P_pid),
		ppid:   int(kp.Eproc.Ppid),
		pgid:   int(kp.Eproc.Pgid),
		start:  uint64(kp.Proc.P_starttime.Sec)*1e6 + uint64(kp.Proc.P_starttime.Usec),
		zombie: kp.Proc.P_stat == 5, // SZOMB
	}
}

func (darwinPlatform) environ(int) ([]byte, error) {
	return nil, errors.New("environment of other processes is not readable on macOS")
}
