package manager

// unreapedChild is always false on macOS: without a subreaper a daemon's
// orphaned process goes to launchd, never to the sidecar, so it cannot be
// followed (docs/containment.md).
func unreapedChild(int) bool { return false }
