package manager

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestRollupReadsRssAndPss(t *testing.T) {
	text := "00400000-7ffdb9955000 ---p 00000000 00:00 0 [rollup]\n" +
		"Rss:              104652 kB\nPss:              104645 kB\nPss_Dirty:        104644 kB\n"
	rss, pss, ok := rollup([]byte(text))
	if !ok || rss != 104652 || pss != 104645 {
		t.Errorf("rollup = %d, %d, %v; want 104652, 104645, true", rss, pss, ok)
	}
	if _, _, ok := rollup(nil); ok {
		t.Error("an empty smaps_rollup (a kernel thread's) read as ok")
	}
}

// readUsage of this very process agrees with what status says of it.
func TestReadUsageOfSelfMatchesStatus(t *testing.T) {
	self, ok := host.process(os.Getpid())
	if !ok {
		t.Fatal("no entry for this process")
	}
	u := readUsage(self.pid, self.start, make([]byte, 4096))
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	var vmRSS int64
	var threads int
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "VmRSS:":
			vmRSS, _ = strconv.ParseInt(f[1], 10, 64)
		case len(f) >= 2 && f[0] == "Threads:":
			threads, _ = strconv.Atoi(f[1])
		}
	}
	if !u.ok || u.rss <= 0 || u.pss <= 0 || u.cpu < 0 {
		t.Fatalf("readUsage(self) = %+v", u)
	}
	// Both move a little as the test runs (the runtime allocates, threads start).
	if d := u.rss - vmRSS<<10; d > 4<<20 || d < -4<<20 {
		t.Errorf("rss %d, status VmRSS %d kB", u.rss, vmRSS)
	}
	if u.threads < 1 || u.threads > threads+8 {
		t.Errorf("threads %d, status %d", u.threads, threads)
	}
	if stale := readUsage(self.pid, self.start+1, make([]byte, 4096)); stale.ok {
		t.Error("a process with another start time (a reused pid) read as ok")
	}
}
