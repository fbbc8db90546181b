package main

import "procmgr/manager"

// cgroupOffReason says why tools get no cgroup v2 of their own, for hello
// and `python -m procmgr`: "" when cgroup mode is on. The manager's probe
// words every reason but the flag's.
func cgroupOffReason(noCgroup bool, mgr *manager.Manager) string {
	if noCgroup {
		return "--no-cgroup was given"
	}
	return mgr.CgroupOffReason()
}
