package manager

// readUsage on macOS: the figures live in proc_pidinfo(PROC_PIDTASKINFO),
// which golang.org/x/sys does not wrap (it is libproc, not a syscall), and
// the kinfo_proc that sysctl gives leaves its tick and RSS fields at zero.
// So a member is counted (Processes, Pids) but its CPU, threads, RSS and PSS
// are Unknown; a run's CPU is known once no member is live (the exit rusage
// wait4 reports for the main process).
func readUsage(pid int, start uint64, _ []byte) procUsage {
	e, ok := host.process(pid)
	if !ok || e.zombie || e.start != start {
		return procUsage{}
	}
	return procUsage{ok: true, cpu: Unknown, threads: Unknown, rss: Unknown, pss: Unknown}
}
