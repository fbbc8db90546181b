package manager

import (
	"bytes"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

type linuxPlatform struct{}

var host platform = linuxPlatform{}

func (linuxPlatform) prepare() error {
	if err := closeOnExecAbove2("/proc/self/fd"); err != nil {
		return err
	}
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

func (linuxPlatform) toolAttr(cgroupFD int) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{
		Setpgid:   true,
		Pdeathsig: syscall.SIGKILL,
	}
	if cgroupFD >= 0 {
		attr.UseCgroupFD = true
		attr.CgroupFD = cgroupFD
	}
	return attr
}

func (linuxPlatform) processes() ([]procEntry, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	out := make([]procEntry, 0, len(names))
	buf := make([]byte, 1024)
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		if e, ok := readStat(pid, buf); ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// readStat parses /proc/<pid>/stat. The command name may hold spaces and
// parentheses, so fields are counted from the last ')'.
func readStat(pid int, buf []byte) (procEntry, bool) {
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/stat", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return procEntry{}, false
	}
	n, err := unix.Read(fd, buf)
	unix.Close(fd)
	if err != nil || n <= 0 {
		return procEntry{}, false
	}
	b := buf[:n]
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return procEntry{}, false
	}
	f := bytes.Fields(b[i+2:])
	// f[0]=state f[1]=ppid f[2]=pgrp ... f[19]=starttime (field 22 of stat)
	if len(f) < 20 {
		return procEntry{}, false
	}
	ppid, _ := strconv.Atoi(string(f[1]))
	pgid, _ := strconv.Atoi(string(f[2]))
	start, _ := strconv.ParseUint(string(f[19]), 10, 64)
	return procEntry{pid: pid, ppid: ppid, pgid: pgid, start: start, zombie: f[0][0] == 'Z' || f[0][0] == 'X'}, true
}

// userHZ is the unit of a process's start time in /proc/<pid>/stat (clock
// ticks of USER_HZ, 100 on every Linux architecture Go supports).
const userHZ = 100

// startClock reads CLOCK_BOOTTIME in USER_HZ ticks, rounded down: the clock
// and rounding of /proc/<pid>/stat's starttime (task->start_boottime, in the
// reader's time namespace as for clock_gettime).
func (linuxPlatform) startClock() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		panic("CLOCK_BOOTTIME: " + err.Error()) // present since Linux 2.6.39
	}
	return uint64(ts.Nano()) / (1e9 / userHZ)
}

func (linuxPlatform) process(pid int) (procEntry, bool) {
	return readStat(pid, make([]byte, 1024))
}

func (linuxPlatform) environ(pid int) ([]byte, error) {
	return os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
}
