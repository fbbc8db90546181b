package manager

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

// membersOfEach indexes many tools in one scan: on a random table (groups,
// marks, ancestry, other sessions' processes, zombies, the sidecar itself) it
// must find for every tool what a scan for that tool alone (membersOf) finds.
func TestMembersOfEachFindsWhatMembersOfFinds(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 50; trial++ {
		nTools := 1 + rng.IntN(20)
		var keys []memberKey
		groups := map[int]groupOwner{}
		for i := 0; i < nTools; i++ {
			keys = append(keys, memberKey{pgid: 2000 + i, tag: fmt.Sprint("t", i)})
			groups[2000+i] = groupOwner{tag: fmt.Sprint("t", i)}
		}
		pt := newProcTable("s", func() map[int]groupOwner { return groups })
		pt.self = 1000
		if rng.IntN(3) == 0 {
			keys = append(keys, memberKey{pgid: 2000, tag: ""}) // a key without a tag
		}
		for pid := 1000; pid < 1300; pid++ {
			e := procEntry{pid: pid, ppid: 1000 + rng.IntN(pid-999), pgid: 2000 + rng.IntN(nTools+5), start: uint64(pid), zombie: rng.IntN(10) == 0}
			pt.entries = append(pt.entries, e)
			if rng.IntN(2) == 0 {
				pt.tags[procKey{e.pid, e.start}] = fmt.Sprint("t", rng.IntN(nTools+3))
			}
		}
		pt.owner = pt.attributeByAncestry(pt.entries, leaders(pt.entries)) // what refresh does after reading /proc
		pt.taken = time.Now().Add(time.Hour)                               // fresh: no refresh from the real /proc

		each := pt.membersOfEach(keys)
		for i, k := range keys {
			got, want := pidsOf(each[i]), pidsOf(pt.membersOf(k))
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("trial %d, tool %+v: membersOfEach %v, membersOf %v", trial, k, got, want)
			}
		}
	}
}

func pidsOf(es []procEntry) []int {
	var pids []int
	for _, e := range es {
		pids = append(pids, e.pid)
	}
	sort.Ints(pids)
	return pids
}
