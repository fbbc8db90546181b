package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	client "procmgr/clients/go"
)

// envAlloc makes the test binary, re-executed as a tool's child, allocate
// and touch that many MiB and then sleep (a process whose memory the test
// knows).
const envAlloc = "PROCMGR_E2E_ALLOC_MIB"

// envAllocReady names the file the allocating child creates once it is done.
const envAllocReady = "PROCMGR_E2E_ALLOC_READY"

func init() {
	if s := os.Getenv(envAlloc); s != "" {
		os.Exit(allocMain(s))
	}
}

func allocMain(mib string) int {
	n, err := strconv.Atoi(mib)
	if err != nil {
		return 2
	}
	b := make([]byte, n<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1 // touch every page, so it is resident
	}
	if err := os.WriteFile(os.Getenv(envAllocReady), nil, 0o644); err != nil {
		return 2
	}
	// Bounded: the tool's stop kills it long before.
	time.Sleep(10 * time.Minute)
	runtime.KeepAlive(b)
	return 0
}

// statusKB reads a "<key>: <n> kB" line of /proc/<pid>/status.
func statusKB(pid int, key string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				return 0, fmt.Errorf("empty %s", key)
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in status of %d", key, pid)
}

// cpuSeconds is utime + stime of one process as /proc/<pid>/stat shows it
// (USER_HZ is 100).
func cpuSeconds(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("stat of %d: %v", pid, err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return float64(u+st) / 100
}

// liveGroup lists the live (non-zombie) pids of process group pgid, sorted.
func liveGroup(pgid int) []int {
	var pids []int
	for _, id := range groupMembers(pgid) {
		if st, err := readStat(id.Pid); err == nil && st.State != 'Z' && st.State != 'X' {
			pids = append(pids, id.Pid)
		}
	}
	sort.Ints(pids)
	return pids
}

func sortedCopy(p []int) []int {
	c := append([]int(nil), p...)
	sort.Ints(c)
	return c
}

// inCgroupModes runs test in parallel against a sidecar in each containment
// mode: membership then comes from the cgroup, or from the group and marks.
// test is told the mode, to check with wantCgroupMode that its tool's
// processes really are in it.
func inCgroupModes(t *testing.T, test func(t *testing.T, sc *sidecar, cgroupOn bool)) {
	t.Parallel()
	for _, mode := range cgroupModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			test(t, startSidecar(t, mode.args...), mode.cgroup)
		})
	}
}

// awaitCPU waits until the processes pids have used at least want seconds
// of CPU between them, as /proc shows it, and returns what it showed.
func awaitCPU(t *testing.T, pids []int, want float64) float64 {
	t.Helper()
	end := time.Now().Add(30 * time.Second)
	for {
		var sum float64
		for _, pid := range pids {
			sum += cpuSeconds(t, pid)
		}
		if sum >= want {
			return sum
		}
		if time.Now().After(end) {
			t.Fatalf("processes %v used %.2f s of CPU in 30 s; awaited %.2f", pids, sum, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustStats(t *testing.T, sc *sidecar, tag string) client.Stats {
	t.Helper()
	s, err := sc.Stats(ctxT(t), tag)
	if err != nil {
		t.Fatalf("stats %q: %v", tag, err)
	}
	return s
}

// awaitStats polls stats until ok holds, failing with what was awaited.
func awaitStats(t *testing.T, sc *sidecar, tag, what string, ok func(client.Stats) bool) client.Stats {
	t.Helper()
	end := time.Now().Add(30 * time.Second)
	for {
		s := mustStats(t, sc, tag)
		if ok(s) {
			return s
		}
		if time.Now().After(end) {
			t.Fatalf("stats of %q: waited 30 s for %s; last %+v", tag, what, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStatsCountMemoryOfTheWholeTree(t *testing.T) {
	inCgroupModes(t, statsCountMemoryOfTheWholeTree)
}

func statsCountMemoryOfTheWholeTree(t *testing.T, sc *sidecar, cgroupOn bool) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const mib = 100
	ready := filepath.Join(t.TempDir(), "touched")
	info := sc.create(client.CreateParams{
		Tag:  "alloc",
		Argv: append(sh(`"$0" & wait`), self),
		Env:  map[string]string{envAlloc: strconv.Itoa(mib), envAllocReady: ready},
	})
	// The shell and its child; wait until the child has touched its memory.
	members := waitGroupSize(t, info.Pgid, 2)
	child := withoutPid(members, info.Pid)[0].Pid
	end := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("child %d did not report its %d MiB touched within 30 s", child, mib)
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantCgroupMode(t, sc, cgroupOn, info.Pid, child)
	if kb, err := statusKB(child, "RssAnon"); err != nil || kb < mib<<10 {
		t.Fatalf("child %d: RssAnon %d kB, %v; want >= %d MiB", child, kb, err, mib)
	}
	s := mustStats(t, sc, "alloc")
	if s.Processes < 2 || s.Processes != len(s.Pids) {
		t.Errorf("processes %d, pids %v: want >= 2 and one pid each", s.Processes, s.Pids)
	}
	if len(s.Pids) == 0 || s.Pids[0] != info.Pid {
		t.Errorf("pids %v: want the main process %d first", s.Pids, info.Pid)
	}
	if got, want := sortedCopy(s.Pids), liveGroup(info.Pgid); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("pids %v, but /proc shows group %d as %v", got, info.Pgid, want)
	}
	if s.RSSBytes == nil || *s.RSSBytes < mib<<20 {
		t.Fatalf("rss_bytes %v, want >= %d MiB", show(s.RSSBytes), mib)
	}
	// Cross-check with what /proc says now of the same processes. The figures
	// move a little between the two reads (the shell, the Go runtime), not by MiBs.
	var sum int64
	for _, pid := range s.Pids {
		kb, err := statusKB(pid, "VmRSS")
		if err != nil {
			t.Fatalf("VmRSS of member %d: %v", pid, err)
		}
		sum += kb << 10
	}
	if d := *s.RSSBytes - sum; d > 8<<20 || d < -8<<20 {
		t.Errorf("rss_bytes %d, but /proc's VmRSS of %v sums to %d", *s.RSSBytes, s.Pids, sum)
	}
	if s.PSSBytes == nil || *s.PSSBytes < (mib-1)<<20 || *s.PSSBytes > *s.RSSBytes+(1<<20) {
		t.Errorf("pss_bytes %v: want about the private %d MiB, at most rss_bytes %d", show(s.PSSBytes), mib, *s.RSSBytes)
	}
	if s.Threads == nil || *s.Threads < 2 {
		t.Errorf("threads %v, want >= 2", show(s.Threads))
	}
	if s.Uptime <= 0 || s.Uptime > time.Since(info.StartedAt).Seconds()+1 {
		t.Errorf("uptime %v, tool started %v ago", s.Uptime, time.Since(info.StartedAt))
	}
}

func TestStatsCPUOfABusyToolGrows(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	info := sc.create(client.CreateParams{Tag: "busy", Argv: sh("while :; do :; done")})
	before := cpuSeconds(t, info.Pid)
	s := mustStats(t, sc, "busy")
	after := cpuSeconds(t, info.Pid)
	// The sidecar read /proc between our two reads (rounded to ms).
	if s.CPUSeconds == nil || *s.CPUSeconds < before-0.001 || *s.CPUSeconds > after+0.001 {
		t.Fatalf("cpu_seconds %v, /proc said %.2f before and %.2f after", show(s.CPUSeconds), before, after)
	}
	first := *s.CPUSeconds
	awaitStats(t, sc, "busy", "cpu_seconds to grow by 0.05 s", func(s client.Stats) bool {
		return s.CPUSeconds != nil && *s.CPUSeconds >= first+0.05
	})
}

// (The busy tools of these tests burn only a fraction of a second each: the
// suite runs on loaded machines, beside tests with tight windows.)

// A run's reaped members still count: the main process's child it waited
// for (through the main's exit rusage), and the run's totals stay once
// nothing of it is left.
func TestStatsAfterExitShowNoProcessAndTheRunsTotals(t *testing.T) {
	inCgroupModes(t, statsAfterExitShowNoProcessAndTheRunsTotals)
}

func statsAfterExitShowNoProcessAndTheRunsTotals(t *testing.T, sc *sidecar, cgroupOn bool) {
	ctx := ctxT(t)
	flag := filepath.Join(t.TempDir(), "done")
	// Two busy processes until the flag file exists; the main one waits for its child.
	loop := `while [ ! -e "$F" ]; do :; done`
	info := sc.create(client.CreateParams{Tag: "burst", Env: map[string]string{"F": flag},
		Argv: sh(`/bin/sh -c '` + loop + `' & ` + loop + `; wait`)})
	running := awaitStats(t, sc, "burst", "two processes with 0.1 s of CPU", func(s client.Stats) bool {
		return s.Processes == 2 && s.CPUSeconds != nil && *s.CPUSeconds >= 0.1
	})
	// Let the OS show them past the last sample (which the figure after
	// exit must not fall back to), then end them.
	wantCgroupMode(t, sc, cgroupOn, running.Pids...)
	burnt := awaitCPU(t, running.Pids, *running.CPUSeconds+0.05)
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := sc.WaitTool(ctx, "burst", client.Ptr(30.0))
	if err != nil || w.ExitCode == nil || *w.ExitCode != 0 {
		t.Fatalf("wait = %+v, %v; want exit 0", w, err)
	}
	if left := liveGroup(info.Pgid); len(left) != 0 {
		t.Fatalf("group %d still has %v after the main process exited", info.Pgid, left)
	}
	done := mustStats(t, sc, "burst")
	if done.Processes != 0 || len(done.Pids) != 0 || done.Pids == nil {
		t.Errorf("after exit: processes %d, pids %v; want 0 and []", done.Processes, done.Pids)
	}
	// About half of it was the child's: it is there only if the child's
	// rusage reached the main's, and the main's the run's account.
	if done.CPUSeconds == nil || *done.CPUSeconds < burnt {
		t.Errorf("cpu_seconds after exit %v, less than the %v /proc showed before the end", show(done.CPUSeconds), burnt)
	}
	if done.RSSBytes == nil || *done.RSSBytes <= 0 {
		t.Errorf("rss_bytes after exit %v, want the last sample's", show(done.RSSBytes))
	}
	ran := w.ExitedAt.Sub(info.StartedAt).Seconds()
	if done.Uptime < ran-0.1 || done.Uptime > ran+1 {
		t.Errorf("uptime after exit %v, the run lasted %v", done.Uptime, ran)
	}
	again := mustStats(t, sc, "burst")
	if again.Uptime != done.Uptime || again.CPUSeconds == nil || done.CPUSeconds == nil || *again.CPUSeconds != *done.CPUSeconds {
		t.Errorf("stats of an exited tool changed: %+v then %+v", done, again)
	}
}

// An orphan the sidecar reaps (its parent, the main process, exited) keeps
// counting for the run once seen.
func TestStatsKeepCPUOfAnOrphanTheSidecarReaped(t *testing.T) {
	inCgroupModes(t, statsKeepCPUOfAnOrphanTheSidecarReaped)
}

func statsKeepCPUOfAnOrphanTheSidecarReaped(t *testing.T, sc *sidecar, cgroupOn bool) {
	ctx := ctxT(t)
	flag := filepath.Join(t.TempDir(), "done")
	info := sc.create(client.CreateParams{Tag: "orphan", Env: map[string]string{"F": flag},
		Argv: sh(`/bin/sh -c 'while [ ! -e "$F" ]; do :; done' & exit 0`)})
	if _, err := sc.WaitTool(ctx, "orphan", client.Ptr(30.0)); err != nil {
		t.Fatal(err)
	}
	seen := awaitStats(t, sc, "orphan", "the orphan with 0.1 s of CPU", func(s client.Stats) bool {
		return s.Processes == 1 && s.CPUSeconds != nil && *s.CPUSeconds >= 0.1
	})
	orphan := mustIdentify(t, seen.Pids[0])
	if st, err := readStat(orphan.Pid); err != nil || st.Pgid != info.Pgid {
		t.Fatalf("member %d is not of the tool's group %d (%+v, %v)", orphan.Pid, info.Pgid, st, err)
	}
	wantCgroupMode(t, sc, cgroupOn, orphan.Pid)
	burnt := awaitCPU(t, seen.Pids, *seen.CPUSeconds+0.05)
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitGone(t, "orphan after its flag", 30*time.Second, []procID{orphan})
	done := mustStats(t, sc, "orphan")
	// The main process's share is in its exit rusage, the orphan's in its
	// own, which only the sidecar's reaper saw.
	if done.Processes != 0 || done.CPUSeconds == nil || *done.CPUSeconds < burnt {
		t.Errorf("after the orphan was reaped: processes %d, cpu_seconds %v; want 0 and >= %v (/proc before its end)",
			done.Processes, show(done.CPUSeconds), burnt)
	}
}

func TestStatsOfUnknownTagIsNoSuchTag(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	if h, err := sc.Hello(ctxT(t)); err != nil || !slices.Contains(h.Features, "stats") {
		t.Errorf("hello features %v, %v: want \"stats\"", h.Features, err)
	}
	_, err := sc.Stats(ctxT(t), "nope")
	wantDataTag(t, wantCode(t, "stats of an unknown tag", err, client.CodeNoSuchTag), "nope")
	sc.create(client.CreateParams{Tag: "gone", Argv: []string{"/bin/sleep", "1000"}})
	if _, err := sc.Stop(ctxT(t), client.StopParams{Tag: "gone"}); err != nil {
		t.Fatal(err)
	}
	_, err = sc.Stats(ctxT(t), "gone")
	wantCode(t, "stats of a stopped (released) tag", err, client.CodeNoSuchTag)
	var raw json.RawMessage
	err = sc.Call(ctxT(t), "stats", map[string]any{}, &raw)
	wantCode(t, "stats without a tag", err, client.CodeInvalidParams)
}

func TestListWithStatsGivesEveryToolsFigures(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	ctx := ctxT(t)
	pgids := map[string]int{}
	for _, tag := range []string{"two", "one"} {
		script := "exec /bin/sleep 1000"
		if tag == "two" {
			script = "/bin/sleep 1000 & wait"
		}
		info := sc.create(client.CreateParams{Tag: tag, Argv: sh(script)})
		pgids[tag] = info.Pgid
	}
	waitGroupSize(t, pgids["two"], 2)
	waitExe(t, pgids["one"], "sleep") // the shell has become sleep
	var rows []struct {
		client.ProcessInfo
		Stats *client.Stats `json:"stats"`
	}
	if err := sc.Call(ctx, "list", map[string]any{"stats": true}, &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Tag != "one" || rows[1].Tag != "two" {
		t.Fatalf("list {stats: true} = %+v; want one, two", rows)
	}
	for _, r := range rows {
		if r.Stats == nil {
			t.Fatalf("%s: no stats", r.Tag)
		}
		want := liveGroup(pgids[r.Tag])
		if got := sortedCopy(r.Stats.Pids); fmt.Sprint(got) != fmt.Sprint(want) || r.Stats.Processes != len(want) {
			t.Errorf("%s: processes %d pids %v, /proc shows %v", r.Tag, r.Stats.Processes, got, want)
		}
		if r.Stats.RSSBytes == nil || *r.Stats.RSSBytes <= 0 || r.Stats.CPUSeconds == nil {
			t.Errorf("%s: stats %+v", r.Tag, r.Stats)
		}
	}
	// Without stats, list is as before: no "stats" member.
	var plain []map[string]any
	if err := sc.Call(ctx, "list", nil, &plain); err != nil {
		t.Fatal(err)
	}
	for _, p := range plain {
		if _, ok := p["stats"]; ok {
			t.Errorf("plain list carries stats: %v", p)
		}
	}
	err := sc.Call(ctx, "list", map[string]any{"stats": "yes"}, &plain)
	wantCode(t, "list with a non-boolean stats", err, client.CodeInvalidParams)
}
