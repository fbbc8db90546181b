package manager

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// cgroupSet is the session's cgroup v2 directory, with one child cgroup per
// tool. A tool is cloned straight into its cgroup (CLONE_INTO_CGROUP), so no
// descendant can be forked outside it, and stopping it with cgroup.kill is
// race-free against forking — unlike walking a process tree.
//
// It is used only where the hierarchy is writable (root, or a delegated
// subtree); elsewhere the manager falls back to process groups plus
// environment attribution.
type cgroupSet struct {
	dir  string // <our cgroup>/procmgr-<session>
	next atomic.Int64

	// spare holds a tool cgroup made ahead of time, so that a create does
	// not wait for mkdir (~60 µs); each one taken is replaced off the create
	// path. mu orders those mkdirs against remove.
	spare  chan string
	mu     sync.Mutex
	made   bool     // the session directory exists
	held   *os.File // the session directory, open while it lives (see mkdir)
	closed bool
}

// spareCgroups is how many tool cgroups wait ready.
const spareCgroups = 2

// errNoCgroup: cgroup v2 is not mounted or not writable here. Every error of
// the probe (openCgroupSet) is a *cgroupOffError that wraps it.
var errNoCgroup = errors.New("cgroup v2 not available")

// cgroupOffError is why cgroup mode is off: reason in the words a user can
// act on (Manager.CgroupOffReason: hello's cgroup.reason), err the OS's
// error behind it, if any, for the log.
type cgroupOffError struct {
	reason string
	err    error
}

func (e *cgroupOffError) Error() string {
	if e.err == nil {
		return e.reason
	}
	return e.reason + ": " + e.err.Error()
}

func (e *cgroupOffError) Unwrap() error { return errNoCgroup }

func cgroupOff(reason string, err error) *cgroupOffError {
	return &cgroupOffError{reason: reason, err: err}
}

// openCgroupSet creates the session's cgroup below the sidecar's own. It
// asks, in order: is this Linux, is cgroup v2 mounted, is the sidecar in
// it, can a cgroup be made below its own; and names the first that fails.
func openCgroupSet(session string) (*cgroupSet, *cgroupOffError) {
	if runtime.GOOS != "linux" {
		return nil, cgroupOff(runtime.GOOS+" has no cgroups", nil)
	}
	mount, err := cgroup2Mount("/proc/self/mountinfo")
	if err != nil {
		return nil, cgroupOff("no cgroup v2 hierarchy is mounted (a cgroup v1 only system, or a kernel older than 4.5)", err)
	}
	own, err := procCgroup("/proc/self/cgroup")
	if err != nil {
		return nil, cgroupOff("the sidecar is not in the cgroup v2 hierarchy (/proc/self/cgroup has no 0:: line)", err)
	}
	parent := filepath.Join(mount, own)
	dir := filepath.Join(parent, "procmgr-"+session)
	// Probe that the hierarchy is writable, but make the directory for good
	// only at the first create: by then the session watchdog runs, and it
	// removes the directory if the sidecar is killed. A sidecar killed
	// before that leaves nothing behind.
	if err := os.Mkdir(dir, 0o755); err != nil {
		if aerr := unix.Access(parent, unix.W_OK); aerr != nil {
			if os.Geteuid() != 0 {
				return nil, cgroupOff(fmt.Sprintf("not root and no delegated cgroup v2: %s is not writable", parent), err)
			}
			return nil, cgroupOff(fmt.Sprintf("%s is not writable: %v", parent, aerr), err)
		}
		return nil, cgroupOff(fmt.Sprintf("cannot create a cgroup below %s (see the sidecar log)", parent), err)
	}
	os.Remove(dir)
	return &cgroupSet{dir: dir, spare: make(chan string, spareCgroups)}, nil
}

// Dir is the session cgroup's path.
func (s *cgroupSet) Dir() string { return s.dir }

// newTool returns a new tool cgroup, a spare one when there is one. Every
// run of the tool is cloned into it (see Manager.fork).
func (s *cgroupSet) newTool() (*toolCgroup, error) {
	select {
	case dir := <-s.spare:
		go s.refill(1)
		return &toolCgroup{dir: dir}, nil
	default:
	}
	s.mu.Lock()
	dir, err := s.mkdir()
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	go s.refill(spareCgroups)
	return &toolCgroup{dir: dir}, nil
}

// mkdir makes a tool cgroup (and the session's at the first call). The
// caller holds mu.
func (s *cgroupSet) mkdir() (string, error) {
	if !s.made {
		if err := os.Mkdir(s.dir, 0o755); err != nil && !os.IsExist(err) {
			return "", err
		}
		// Held open for the session's life (close-on-exec: no tool inherits
		// it): that is how a sweep of ended sessions' cgroups (litter.go,
		// another sidecar's) tells a live session from litter, even when no
		// tool runs and no watchdog names it.
		s.held, _ = os.Open(s.dir)
		s.made = true
	}
	dir := filepath.Join(s.dir, "tool-"+strconv.FormatInt(s.next.Add(1), 10))
	return dir, os.Mkdir(dir, 0o755)
}

// refill makes up to n spare cgroups, unless the set was removed meanwhile.
func (s *cgroupSet) refill(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ; n > 0 && !s.closed && len(s.spare) < cap(s.spare); n-- {
		dir, err := s.mkdir()
		if err != nil {
			return
		}
		s.spare <- dir // cannot block: there was room, and only refill sends under mu
	}
}

// remove deletes the session cgroup; it fails (harmlessly) while populated.
func (s *cgroupSet) remove() error {
	s.mu.Lock()
	s.closed = true
	if s.held != nil {
		s.held.Close()
		s.held = nil
	}
	s.mu.Unlock()
	return removeCgroupTree(s.dir)
}

// toolCgroup is one tool's cgroup.
type toolCgroup struct{ dir string }

// pids lists the processes in the cgroup (exited ones are not listed).
func (c *toolCgroup) pids() []int { return readPids(filepath.Join(c.dir, "cgroup.procs")) }

// kill SIGKILLs every process in the cgroup, atomically where the kernel has
// cgroup.kill (5.14+), else one by one.
func (c *toolCgroup) kill() {
	if err := os.WriteFile(filepath.Join(c.dir, "cgroup.kill"), []byte("1"), 0); err == nil {
		return
	}
	for _, pid := range c.pids() {
		if pid > 1 {
			unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// release removes the cgroup once it is empty.
func (c *toolCgroup) release() { os.Remove(c.dir) }

func readPids(path string) []int {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range bytes.Fields(b) {
		if pid, err := strconv.Atoi(string(f)); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cgroupTree lists dir and every cgroup below it, each before its children:
// the one walk of a cgroup tree. A cgroup made after the walk is not listed.
func cgroupTree(dir string) []string {
	dirs := []string{dir}
	for i := 0; i < len(dirs); i++ {
		entries, _ := os.ReadDir(dirs[i])
		for _, e := range entries {
			if e.IsDir() {
				dirs = append(dirs, filepath.Join(dirs[i], e.Name()))
			}
		}
	}
	return dirs
}

// removeCgroupTree removes dir and its child cgroups, deepest first.
func removeCgroupTree(dir string) error {
	dirs := cgroupTree(dir)
	for i := len(dirs) - 1; i > 0; i-- {
		os.Remove(dirs[i])
	}
	return os.Remove(dir)
}

// killCgroupTree SIGKILLs every process in dir and its child cgroups. It is
// how the session watchdog empties a session whose sidecar died.
func killCgroupTree(dir string) {
	for _, d := range cgroupTree(dir) {
		(&toolCgroup{dir: d}).kill()
	}
}

// cgroupTreePids lists the processes of dir and of its child cgroups.
func cgroupTreePids(dir string) []int {
	var pids []int
	for _, d := range cgroupTree(dir) {
		pids = append(pids, readPids(filepath.Join(d, "cgroup.procs"))...)
	}
	return pids
}

// cgroup2Mount finds the cgroup v2 mount point in a mountinfo file. It is
// not always /sys/fs/cgroup: hybrid systems mount it at /sys/fs/cgroup/unified.
func cgroup2Mount(mountinfo string) (string, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) >= 5 && len(qf) >= 1 && qf[0] == "cgroup2" {
			return unescapeMountPath(pf[4]), nil
		}
	}
	return "", errors.New("no cgroup2 mount")
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// procCgroup returns the cgroup v2 path ("0::/path") in a /proc/<pid>/cgroup
// file: the sidecar's own, or a process's it attributes (Manager.cgroupOf).
func procCgroup(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p, nil
		}
	}
	return "", errors.New("not in a cgroup v2 hierarchy")
}
