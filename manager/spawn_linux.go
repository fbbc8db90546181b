package manager

import (
	"bufio"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// emptySignalMask empties the calling thread's signal mask; the spawner
// thread calls it once. A child inherits the mask of the thread that forked
// it (the runtime saves the thread's mask before a fork and restores it in
// the child), and every thread starts with the mask the sidecar was started
// with: a host that started the sidecar with SIGUSR1 blocked would pass that
// on to every tool.
func emptySignalMask() {
	var empty unix.Sigset_t
	unix.PthreadSigmask(unix.SIG_SETMASK, &empty, nil)
}

// defaultIgnoredSignals makes every signal the sidecar was started with
// ignored (SIG_IGN) go back to its default action in tools. The Go runtime
// leaves such a signal ignored, and an ignored disposition survives fork and
// exec; a signal the runtime handles is reset to SIG_DFL in the child. So
// each one gets a handler here: a Notify whose channel nobody reads, which
// keeps it as good as ignored in the sidecar itself. The few the runtime
// will not handle (32 and 33, kept for a C library's threads) are set to
// SIG_DFL outright: nothing sends them to the sidecar.
func defaultIgnoredSignals() {
	var sigs []os.Signal
	for _, sig := range ignoredSignals() {
		sigs = append(sigs, sig)
	}
	if len(sigs) == 0 {
		return
	}
	signal.Notify(make(chan os.Signal, 1), sigs...)
	for _, sig := range ignoredSignals() {
		var act [4]uint64 // struct sigaction, all zero: SIG_DFL, no flags, empty mask
		unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0)
	}
}

// ignoredSignals lists the signals this process ignores (SigIgn in
// /proc/self/status), SIGKILL and SIGSTOP aside.
func ignoredSignals() []syscall.Signal {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		hex, ok := strings.CutPrefix(sc.Text(), "SigIgn:")
		if !ok {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
		if err != nil {
			return nil
		}
		var sigs []syscall.Signal
		for i := 1; i <= 64; i++ {
			sig := syscall.Signal(i)
			if mask&(1<<(i-1)) != 0 && sig != syscall.SIGKILL && sig != syscall.SIGSTOP {
				sigs = append(sigs, sig)
			}
		}
		return sigs
	}
	return nil
}
