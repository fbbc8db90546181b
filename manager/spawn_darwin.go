package manager

// macOS: x/sys does not wrap pthread_sigmask there, and no /proc shows the
// ignored set; tools inherit the sidecar's mask and ignored signals
// (docs/containment.md).

func emptySignalMask() {}

func defaultIgnoredSignals() {}
