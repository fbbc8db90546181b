package manager

import "log/slog"

// armParentDeathSignal: macOS has no parent-death signal; stdin EOF and the
// kqueue on the host pid remain.
func armParentDeathSignal(func(string), *slog.Logger) {}
