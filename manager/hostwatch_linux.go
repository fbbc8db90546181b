package manager

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// parentDeathSignal is what the kernel sends the sidecar when the thread that
// forked it exits. A dedicated signal keeps it apart from a real SIGTERM.
const parentDeathSignal = syscall.SIGUSR2

// armParentDeathSignal arms a parent-death signal on the sidecar itself. It
// fires when the *thread* that spawned the sidecar exits, which is not always
// the host's death (a Python thread that started the sidecar may end), so it
// counts only if our parent has really changed. A parent that died before it
// was armed is caught by the host-pid watch.
func armParentDeathSignal(report func(string), log *slog.Logger) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, parentDeathSignal)
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(parentDeathSignal), 0, 0, 0); err != nil {
		log.Warn("parent-death signal not armed", "err", err)
		return
	}
	parent := os.Getppid()
	go func() {
		for range sigs {
			if os.Getppid() != parent {
				report("parent-death signal")
				return
			}
			log.Debug("parent-death signal ignored: the spawning thread exited, the parent lives")
		}
	}()
}
