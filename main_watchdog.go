package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"procmgr/manager"
)

// watchdogFlag, as the first argument, runs the binary as a session watchdog
// (manager/watchdog.go). It is not in --help: only the sidecar starts it.
const watchdogFlag = "--watchdog"

// watchdogMain parses the watchdog's flags and runs it.
func watchdogMain(args []string) int {
	fs := flag.NewFlagSet("procmgr "+watchdogFlag, flag.ContinueOnError)
	var cfg manager.WatchdogConfig
	var logFile, logLevel string
	fs.StringVar(&cfg.Session, "session", "", "PROCMGR_SESSION of the tools to sweep")
	fs.IntVar(&cfg.SidecarPid, "sidecar-pid", 0, "the sidecar (our parent)")
	fs.Uint64Var(&cfg.SidecarStart, "sidecar-start", 0, "the sidecar's start time, to tell a recycled pid apart")
	fs.BoolVar(&cfg.SidecarLeadsSession, "sidecar-leads-session", false, "the sidecar leads its own session: its members are the tools'")
	fs.StringVar(&cfg.Cgroup, "cgroup", "", "the session cgroup")
	fs.StringVar(&cfg.TempDir, "temp-dir", "", "the session's temporary directory, removed after the sweep")
	fs.StringVar(&logFile, "log-file", "", "append logs to this file instead of stderr")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log, err := newLogger(logFile, logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "procmgr watchdog:", err)
		return 2
	}
	cfg.Logger = log
	return manager.RunWatchdog(cfg, os.Stdin)
}

// startWatchdog starts the session watchdog and returns what ends it on a
// normal exit. Without one the sidecar still runs, with one layer less.
func startWatchdog(mgr *manager.Manager, c config, log *slog.Logger) func() {
	args := []string{"--log-level", c.logLevel}
	if c.logFile != "" {
		args = append(args, "--log-file", c.logFile)
	}
	if c.tempDir != "" {
		args = append(args, "--temp-dir", c.tempDir)
	}
	if err := mgr.StartWatchdog("", args...); err != nil {
		log.Warn("no session watchdog: descendants of tools may outlive a SIGKILLed sidecar", "err", err)
	}
	return func() { mgr.CloseWatchdog(2 * time.Second) }
}
