package manager

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// writeRecord makes dir a session's temporary directory whose record names
// the given processes.
func writeRecord(t *testing.T, dir, session string, procs ...procKey) {
	t.Helper()
	text := "session " + session + "\n"
	for i, p := range procs {
		kind := "sidecar"
		if i > 0 {
			kind = "watchdog"
		}
		text += fmt.Sprintf("%s %d %d\n", kind, p.pid, p.start)
	}
	if err := os.WriteFile(filepath.Join(dir, sessionRecordName), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func self(t *testing.T) procKey {
	t.Helper()
	start, ok := processStart(os.Getpid())
	if !ok {
		t.Fatal("cannot read our own start time")
	}
	return procKey{os.Getpid(), start}
}

// exitedProcess is a process that ran and was reaped: its pid names nothing
// now (or, recycled, another process).
func exitedProcess(t *testing.T) procKey {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	start, _ := processStart(cmd.Process.Pid)
	cmd.Wait()
	return procKey{cmd.Process.Pid, start}
}

func TestTempDirSweepRemovesOnlyProvablyEndedSessions(t *testing.T) {
	root := t.TempDir()
	mk := func(name string) string {
		d := filepath.Join(root, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(d, "sidecar.log"), []byte("log"), 0o600)
		return d
	}
	live := self(t)
	gone := exitedProcess(t)
	recycled := procKey{live.pid, live.start + 1} // our pid, another start time: not that sidecar

	ended := mk("procmgr-ended")
	writeRecord(t, ended, "s-ended", gone)
	reused := mk("procmgr-reused")
	writeRecord(t, reused, "s-reused", recycled)
	watched := mk("procmgr-watchdog-lives")
	writeRecord(t, watched, "s-watched", gone, live)
	alive := mk("procmgr-alive")
	writeRecord(t, alive, "s-alive", live)
	ours := mk("procmgr-ours")
	writeRecord(t, ours, "s-ours", gone)
	unclaimed := mk("procmgr-unclaimed") // no record: being set up, or someone else's
	other := mk("other-ended")
	writeRecord(t, other, "s-other", gone)

	removed := sweepTempDirs("s-ours", root)
	for _, d := range []string{ended, reused} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s of an ended session is still there (removed: %v)", d, removed)
		}
	}
	for _, d := range []string{watched, alive, ours, unclaimed, other} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s was removed: %v", d, err)
		}
	}
	if len(removed) != 2 {
		t.Errorf("removed %v, want the 2 ended sessions' directories", removed)
	}
}

func TestRemoveTempDirChecksTheSession(t *testing.T) {
	dir := t.TempDir()
	if err := ClaimTempDir(dir, "s1"); err != nil {
		t.Fatal(err)
	}
	rec, err := readSessionRecord(dir)
	if err != nil || rec.session != "s1" || len(rec.procs) != 1 || rec.procs[0] != self(t) {
		t.Fatalf("record %+v, %v: want session s1 naming this process", rec, err)
	}
	if rec.over() {
		t.Fatal("a record naming this live process says the session is over")
	}
	if err := RemoveTempDir(dir, "s2"); err == nil {
		t.Fatal("RemoveTempDir removed another session's directory")
	}
	if err := RemoveTempDir(dir, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("%s is still there", dir)
	}
}
