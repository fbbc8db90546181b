//go:build linux

package micro

import (
	"context"
	"fmt"
	"syscall"
	"testing"

	"procmgr/manager"
)

// manager.ListStats (`list` {stats: true} without JSON) at 100 and 1000
// tools of one process each: membership, then stat, status and
// smaps_rollup of every member. Set MICRO_CGROUPS=0 for the group and
// marks path.
func BenchmarkManagerListStats(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			m := newManager(b)
			ctx := context.Background()
			env := []string{"PATH=/usr/bin:/bin"}
			var tags []string
			defer func() {
				b.StopTimer()
				for _, tag := range tags {
					m.Stop(ctx, tag, syscall.SIGKILL, 0)
				}
			}()
			for i := 0; i < n; i++ {
				tag := newTag("ls")
				if _, err := m.Create(ctx, manager.Spec{Tag: tag, Argv: []string{"/bin/sleep", "600"}, Env: env}); err != nil {
					b.Fatal(err)
				}
				tags = append(tags, tag)
			}
			m.ListStats()
			var ru0, ru1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if infos, stats := m.ListStats(); len(infos) != n || len(stats) != n {
					b.Fatalf("ListStats: %d tools, want %d", len(infos), n)
				}
			}
			b.StopTimer()
			// CPU time, less sensitive than wall time to a loaded machine (the
			// reaper and other goroutines of the process count too).
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
			b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}
