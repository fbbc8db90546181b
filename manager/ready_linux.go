package manager

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// listeningInodes returns the inodes of the TCP sockets (IPv4 and IPv6) in
// LISTEN state on port, from the sidecar's network namespace.
func listeningInodes(port int) (map[uint64]bool, bool) {
	inodes := make(map[uint64]bool)
	known := false
	for _, path := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		f, err := os.Open(path)
		if err != nil {
			continue // no IPv6 in this kernel: tcp alone
		}
		known = true
		sc := bufio.NewScanner(f)
		sc.Scan() // the header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" { // 0A: TCP_LISTEN
				continue
			}
			i := strings.LastIndexByte(fields[1], ':')
			p, err := strconv.ParseUint(fields[1][i+1:], 16, 16)
			if err != nil || int(p) != port {
				continue
			}
			if ino, err := strconv.ParseUint(fields[9], 10, 64); err == nil && ino != 0 {
				inodes[ino] = true
			}
		}
		f.Close()
	}
	return inodes, known
}

// holdsSocket reports whether pid has a descriptor on one of the sockets.
func holdsSocket(pid int, inodes map[uint64]bool) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	d, err := os.Open(dir)
	if err != nil {
		return false
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	for _, name := range names {
		link, err := os.Readlink(dir + name)
		if err != nil {
			continue
		}
		if s, ok := strings.CutPrefix(link, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil && inodes[ino] {
				return true
			}
		}
	}
	return false
}

// socketHolder finds a process holding one of the sockets, and its name.
func socketHolder(inodes map[uint64]bool) (int, string, bool) {
	d, err := os.Open("/proc")
	if err != nil {
		return 0, "", false
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if holdsSocket(pid, inodes) {
			comm, _ := os.ReadFile("/proc/" + name + "/comm")
			return pid, strings.TrimSpace(string(comm)), true
		}
	}
	return 0, "", false
}
