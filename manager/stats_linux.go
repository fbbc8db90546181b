package manager

import (
	"bytes"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// clockTick is the unit of the times in /proc/<pid>/stat: USER_HZ, which
// the kernel fixes at 100 on every architecture Go runs Linux on.
const clockTick = time.Second / 100

// readUsage reads one process's figures from /proc/<pid>/stat (CPU,
// threads) and smaps_rollup (RSS and PSS, from one walk of the process's
// page tables). Where smaps_rollup cannot be read (a process that is not
// dumpable), RSS comes from statm: the VmRSS of status, without formatting
// fifty other lines. stat's own rss field is not used: it reads the per-CPU
// counters without summing them, an approximation. A process whose start
// time is no longer start was replaced by another with its pid: not ok.
func readUsage(pid int, start uint64, buf []byte) procUsage {
	dir := "/proc/" + strconv.Itoa(pid)
	b := readSmall(dir+"/stat", buf)
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return procUsage{}
	}
	// f[0] is field 3 (state) of proc(5): utime 14, stime 15, cutime 16,
	// cstime 17, num_threads 20, starttime 22.
	f := bytes.Fields(b[i+2:])
	if len(f) < 22 || f[0][0] == 'Z' || f[0][0] == 'X' {
		return procUsage{}
	}
	if st, _ := strconv.ParseUint(string(f[19]), 10, 64); st != start {
		return procUsage{}
	}
	var ticks int64
	for _, k := range []int{11, 12, 13, 14} {
		v, _ := strconv.ParseInt(string(f[k]), 10, 64)
		ticks += v
	}
	threads, _ := strconv.Atoi(string(f[17]))
	u := procUsage{ok: true, cpu: time.Duration(ticks) * clockTick, threads: threads, rss: Unknown, pss: Unknown}
	if rss, pss, ok := rollup(readSmall(dir+"/smaps_rollup", buf)); ok {
		u.rss, u.pss = rss<<10, pss<<10
	} else if m := bytes.Fields(readSmall(dir+"/statm", buf)); len(m) >= 2 {
		if pages, err := strconv.ParseInt(string(m[1]), 10, 64); err == nil {
			u.rss = pages * pageSize
		}
	}
	return u
}

var pageSize = int64(os.Getpagesize())

// readSmall reads a /proc file of at most len(buf) bytes in one read; nil
// when it cannot be read.
func readSmall(path string, buf []byte) []byte {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	n, err := unix.Read(fd, buf)
	if err != nil || n <= 0 {
		return nil
	}
	return buf[:n]
}

// rollup finds the "Rss: <n> kB" and "Pss: <n> kB" lines of smaps_rollup.
// A kernel thread's (no memory map) has none: not ok.
func rollup(b []byte) (rssKiB, pssKiB int64, ok bool) {
	var found int
	for len(b) > 0 && found < 2 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		var dst *int64
		if v, cut := bytes.CutPrefix(line, []byte("Rss:")); cut {
			line, dst = v, &rssKiB
		} else if v, cut := bytes.CutPrefix(line, []byte("Pss:")); cut {
			line, dst = v, &pssKiB
		} else {
			continue
		}
		f := bytes.Fields(line)
		if len(f) == 0 {
			return 0, 0, false
		}
		n, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, 0, false
		}
		*dst = n
		found++
	}
	return rssKiB, pssKiB, found == 2
}
