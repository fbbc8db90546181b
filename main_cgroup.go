package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// cgroupOffReason says why tools get no cgroup v2 of their own, for hello
// and `python -m procmgr`: "" when cgroup mode is on. It asks the same
// questions as the manager's probe (manager/cgroup.go), in order, and names
// the first that fails in the words a user can act on.
func cgroupOffReason(noCgroup, on bool) string {
	switch {
	case on:
		return ""
	case noCgroup:
		return "--no-cgroup was given"
	case runtime.GOOS != "linux":
		return runtime.GOOS + " has no cgroups"
	}
	mount := cgroup2MountPoint()
	if mount == "" {
		return "no cgroup v2 hierarchy is mounted (a cgroup v1 only system, or a kernel older than 4.5)"
	}
	own := ""
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if p, ok := strings.CutPrefix(line, "0::"); ok {
				own = p
			}
		}
	}
	if own == "" {
		return "the sidecar is not in the cgroup v2 hierarchy (/proc/self/cgroup has no 0:: line)"
	}
	dir := filepath.Join(mount, own)
	if err := unix.Access(dir, unix.W_OK); err != nil {
		if os.Geteuid() != 0 {
			return fmt.Sprintf("not root and no delegated cgroup v2: %s is not writable", dir)
		}
		return fmt.Sprintf("%s is not writable: %v", dir, err)
	}
	return fmt.Sprintf("cannot create a cgroup below %s (see the sidecar log)", dir)
}

// cgroup2MountPoint is where cgroup v2 is mounted, "" when it is not.
func cgroup2MountPoint() string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if ok && len(pf) >= 5 && len(qf) >= 1 && qf[0] == "cgroup2" {
			return strings.ReplaceAll(pf[4], `\040`, " ")
		}
	}
	return ""
}
