package manager

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// waitUntil polls cond until it holds, failing the test with what it waited
// for once the deadline (generous: it only prevents hangs) passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(20 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("waited 20s for %s", what)
		}
	}
}

// zombiesOfGroup lists the zombies in process group pgid whose parent is
// this process (the manager: a subreaper).
func zombiesOfGroup(pgid int) []string {
	var out []string
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 3 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		pg, _ := strconv.Atoi(f[2])
		if pg == pgid && ppid == os.Getpid() && (f[0] == "Z" || f[0] == "X") {
			out = append(out, strings.TrimSpace(s))
		}
	}
	return out
}

// A member whose parent exited is the sidecar's (the subreaper's) child: once
// killed it is a zombie until reaped, and stop must not return before that.
// Repeated because the window is the reaper's wake-up after SIGCHLD.
func TestStopReturnsOnlyOnceOrphanedMembersAreReaped(t *testing.T) {
	for i := 0; i < 10; i++ {
		tag := fmt.Sprintf("orphans%d", i)
		in, err := testMgr.Create(bg(), Spec{Tag: tag, Argv: []string{"sh", "-c", "sleep 1000 & sleep 1000 & sleep 1000 & exit 0"}})
		if err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the leader "+tag+" to exit, leaving its children", func() bool {
			got, ok := testMgr.Fetch(tag)
			return ok && got.Exited
		})
		if _, err := testMgr.Stop(bg(), tag, 0, 0); err != nil {
			t.Fatal(err)
		}
		if z := zombiesOfGroup(in.Pgid); len(z) > 0 {
			t.Fatalf("stop returned with %d unreaped member(s) of group %d:\n%s", len(z), in.Pgid, strings.Join(z, "\n"))
		}
	}
}
