package manager

import (
	"log/slog"
	"sync"
)

// WatchHost reports, once, that the host process hostPid has died, by
// whichever independent signal notices first (see hostwatch_linux.go and
// hostwatch_darwin.go). The value received names the signal. EOF on stdin,
// the third signal, is the transport's to notice.
func WatchHost(hostPid int, log *slog.Logger) <-chan string {
	gone := make(chan string, 1)
	var once sync.Once
	report := func(reason string) {
		once.Do(func() {
			log.Info("host is gone", "host_pid", hostPid, "noticed_by", reason)
			gone <- reason
		})
	}
	watchHost(hostPid, report, log)
	return gone
}
