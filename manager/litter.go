package manager

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A session leaves two things on disk: the temporary directory its host made
// for it (the sidecar's log and stderr; --temp-dir) and, in cgroup mode, its
// session cgroup. Both go when the session ends — the sidecar removes them on
// its way out, the watchdog after a SIGKILL of the sidecar — and a starting
// sidecar removes those of sessions that are provably over, for when both the
// sidecar and its watchdog were killed.
//
// "Provably over" means no process of the session is alive, judged from facts
// a live session always shows:
//
//   - a temporary directory is over when its session record (sessionRecord,
//     written by the sidecar at start and by every watchdog it starts) names
//     processes none of which is alive: each is named by pid and start time,
//     so a recycled pid does not count as the sidecar. A directory without a
//     record (being set up, or not a session's at all) is never touched, nor
//     is one owned by another user;
//   - a session cgroup is over when no process is in its tree, no process of
//     the cgroup it lives in (where its sidecar and watchdog run) holds it
//     open (a sidecar keeps its session cgroup open) or names it on its
//     command line (a watchdog is told --cgroup), and it has not changed for
//     litterMinAge (it may have been made a moment ago by a sidecar that has
//     not opened it yet). A process whose descriptors cannot be read makes
//     the whole cgroup sweep stop: nothing is removed on a guess.

// sessionRecordName is the session record's file in a temporary directory.
const sessionRecordName = "procmgr-session"

// litterMinAge: a session cgroup younger than this is never swept.
const litterMinAge = 2 * time.Second

// ClaimTempDir marks dir as the temporary directory of this session, which
// ends it: the sidecar calls it at start, before anything else can fail. A
// watchdog adds itself with recordWatchdog.
func ClaimTempDir(dir, session string) error {
	start, ok := processStart(os.Getpid())
	if !ok {
		return errors.New("cannot read the sidecar's own start time")
	}
	rec := fmt.Sprintf("session %s\nsidecar %d %d\n", session, os.Getpid(), start)
	tmp := filepath.Join(dir, sessionRecordName+".new")
	if err := os.WriteFile(tmp, []byte(rec), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, sessionRecordName))
}

// recordWatchdog adds the running watchdog to dir's session record, so that a
// sweep does not take the session for over while the watchdog still works.
func recordWatchdog(dir string) error {
	start, ok := processStart(os.Getpid())
	if !ok {
		return errors.New("cannot read the watchdog's own start time")
	}
	f, err := os.OpenFile(filepath.Join(dir, sessionRecordName), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "watchdog %d %d\n", os.Getpid(), start)
	return err
}

// RemoveTempDir removes dir and everything in it, if its session record
// names session (a wrong flag must not remove a stranger's directory).
func RemoveTempDir(dir, session string) error {
	rec, err := readSessionRecord(dir)
	if err != nil {
		return err
	}
	if rec.session != session {
		return fmt.Errorf("%s belongs to session %q, not %q", dir, rec.session, session)
	}
	return os.RemoveAll(dir)
}

// sessionRecord is what a temporary directory's record says.
type sessionRecord struct {
	session string
	procs   []procKey // the sidecar and every watchdog it started
}

func readSessionRecord(dir string) (sessionRecord, error) {
	var rec sessionRecord
	b, err := os.ReadFile(filepath.Join(dir, sessionRecordName))
	if err != nil {
		return rec, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "session":
			rec.session = f[1]
		case len(f) == 3 && (f[0] == "sidecar" || f[0] == "watchdog"):
			pid, err1 := strconv.Atoi(f[1])
			start, err2 := strconv.ParseUint(f[2], 10, 64)
			if err1 != nil || err2 != nil || pid <= 0 {
				return rec, fmt.Errorf("%s: bad line %q", dir, sc.Text())
			}
			rec.procs = append(rec.procs, procKey{pid, start})
		}
	}
	if rec.session == "" || len(rec.procs) == 0 {
		return rec, fmt.Errorf("%s: incomplete session record", dir)
	}
	return rec, nil
}

// over: none of the record's processes is alive (a pid alive with another
// start time is another process; a zombie has ended).
func (r sessionRecord) over() bool {
	for _, p := range r.procs {
		if e, ok := host.process(p.pid); ok && e.start == p.start && !e.zombie {
			return false
		}
	}
	return true
}

// SweepLitter removes the temporary directories (in tmpRoot, "" for the
// system's) and the empty session cgroups that sessions provably over left
// behind, never session's own. It returns what it removed. It is meant to
// run once, in the background, when a sidecar starts.
func SweepLitter(session, tmpRoot string, log *slog.Logger) []string {
	if tmpRoot == "" {
		tmpRoot = os.TempDir()
	}
	removed := sweepTempDirs(session, tmpRoot)
	removed = append(removed, sweepCgroups(session, log)...)
	if len(removed) > 0 {
		log.Info("removed what ended sessions left behind", "paths", removed)
	}
	log.Debug("litter sweep done", "removed", len(removed))
	return removed
}

func sweepTempDirs(session, root string) []string {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil
	}
	var removed []string
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "procmgr-") {
			continue
		}
		dir := filepath.Join(root, e.Name())
		var st syscall.Stat_t
		if syscall.Lstat(dir, &st) != nil || int(st.Uid) != os.Geteuid() {
			continue
		}
		rec, err := readSessionRecord(dir)
		if err != nil || rec.session == session || !rec.over() {
			continue
		}
		if os.RemoveAll(dir) == nil {
			removed = append(removed, dir)
		}
	}
	return removed
}

// sweepCgroups removes the empty, unheld, settled procmgr-* siblings of the
// session cgroup (see the rules above).
func sweepCgroups(session string, log *slog.Logger) []string {
	mount, err := cgroup2Mount("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	own, err := procCgroup("/proc/self/cgroup")
	if err != nil {
		return nil
	}
	parent := filepath.Join(mount, own)
	entries, err := os.ReadDir(parent)
	if err != nil {
		return nil
	}
	candidates := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, "procmgr-") || name == "procmgr-"+session {
			continue
		}
		dir := filepath.Join(parent, name)
		if info, err := os.Stat(dir); err != nil || time.Since(info.ModTime()) < litterMinAge {
			continue
		}
		if len(cgroupTreePids(dir)) == 0 {
			candidates[dir] = true
		}
	}
	if len(candidates) == 0 {
		return nil
	}
	// Whoever made a sibling lives in our cgroup (a sidecar makes its session
	// cgroup below its own, and its watchdog runs beside it), or is gone.
	for _, pid := range readPids(filepath.Join(parent, "cgroup.procs")) {
		if pid == os.Getpid() {
			continue
		}
		if err := dropLiveCgroups(pid, candidates); err != nil {
			log.Debug("not sweeping session cgroups: cannot tell what a process holds", "pid", pid, "err", err)
			return nil
		}
	}
	var removed []string
	for dir := range candidates {
		// Deepest first; a cgroup that gained a process meanwhile refuses.
		if removeCgroupTree(dir) == nil {
			removed = append(removed, dir)
		}
	}
	return removed
}

// dropLiveCgroups removes from candidates every directory pid holds open or
// names on its command line. A process that is gone holds nothing.
func dropLiveCgroups(pid int, candidates map[string]bool) error {
	base := "/proc/" + strconv.Itoa(pid)
	if cmdline, err := os.ReadFile(base + "/cmdline"); err == nil {
		for _, arg := range bytes.Split(cmdline, []byte{0}) {
			dropHeld(candidates, string(arg))
		}
	}
	fds, err := os.ReadDir(base + "/fd")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return err
	}
	for _, fd := range fds {
		if target, err := os.Readlink(base + "/fd/" + fd.Name()); err == nil {
			dropHeld(candidates, target)
		}
	}
	return nil
}

// dropHeld removes from candidates the session cgroup that path is, or is
// inside: a sidecar that holds one of its tool cgroups open (as CgroupFD
// does around a clone) is as alive as one that holds the session's.
func dropHeld(candidates map[string]bool, path string) {
	for dir := path; len(dir) > 1; dir = filepath.Dir(dir) {
		delete(candidates, dir)
	}
}
