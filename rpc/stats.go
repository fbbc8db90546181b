package rpc

import (
	"context"
	"time"

	"procmgr/manager"
)

// statsResult is the result of `stats` (docs/protocol.md): a tool's whole
// tree. A figure the OS does not show is null.
type statsResult struct {
	Processes  int      `json:"processes"`
	Threads    *int     `json:"threads"`
	CPUSeconds *float64 `json:"cpu_seconds"`
	RSSBytes   *int64   `json:"rss_bytes"`
	PSSBytes   *int64   `json:"pss_bytes"`
	Uptime     float64  `json:"uptime"` // seconds
	Pids       []int    `json:"pids"`
}

func toStatsResult(s manager.Stats) statsResult {
	r := statsResult{Processes: s.Processes, Uptime: s.Uptime.Seconds(), Pids: s.Pids}
	if s.Threads != manager.Unknown {
		r.Threads = &s.Threads
	}
	if s.CPU != manager.Unknown {
		cpu := s.CPU.Round(time.Millisecond).Seconds()
		r.CPUSeconds = &cpu
	}
	if s.RSS != manager.Unknown {
		r.RSSBytes = &s.RSS
	}
	if s.PSS != manager.Unknown {
		r.PSSBytes = &s.PSS
	}
	if r.Pids == nil {
		r.Pids = []int{}
	}
	return r
}

func (s *service) stats(_ context.Context, p tagParams) (statsResult, error) {
	tag, err := p.tag()
	if err != nil {
		return statsResult{}, err
	}
	st, err := s.m.Stats(tag)
	if err != nil {
		return statsResult{}, toRPCError(err, tag)
	}
	return toStatsResult(st), nil
}

type listParams struct {
	// Stats adds each tool's stats, sampled in one pass.
	Stats bool `json:"stats"`
}

// IsLookup: a plain list answers from memory, on the reading goroutine like
// the other lookups; with stats it reads /proc (jsonrpc.Lookup).
func (p listParams) IsLookup() bool { return !p.Stats }

// processInfoStats is a ProcessInfo with its tool's stats, as `list`
// {stats: true} returns it.
type processInfoStats struct {
	processInfo
	Stats statsResult `json:"stats"`
}

func (s *service) listStats() []processInfoStats {
	infos, stats := s.m.ListStats()
	out := make([]processInfoStats, len(infos))
	for i := range infos {
		out[i] = processInfoStats{toProcessInfo(infos[i]), toStatsResult(stats[i])}
	}
	return out
}
