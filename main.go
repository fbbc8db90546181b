// Command procmgr is a process-manager sidecar: a host session spawns it and
// drives it with JSON-RPC 2.0 over its stdin and stdout (docs/protocol.md).
// Every tool it starts dies with the session (docs/containment.md).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"procmgr/manager"
	"procmgr/rpc"
	"procmgr/rpc/jsonrpc"

	"golang.org/x/sys/unix"
)

var version = "0.1.0" // overridden with -ldflags "-X main.version=..."

type config struct {
	parentPid   int
	stdoutFd    int
	stderrFd    int
	logFile     string
	tempDir     string
	logLevel    string
	framing     string
	maxMessage  int
	stopTimeout float64
	noCgroup    bool
}

func main() {
	// A write to a closed stdout must fail with EPIPE, not kill the sidecar
	// before it has stopped the tools. Notify (not Ignore) so tools start with
	// SIGPIPE at its default: an ignored signal would be inherited across exec.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	if len(os.Args) > 1 && os.Args[1] == watchdogFlag {
		os.Exit(watchdogMain(os.Args[2:])) // the session watchdog (main_watchdog.go)
	}
	code := run()
	stderrLog.flush(200 * time.Millisecond)
	os.Exit(code)
}

func parseFlags() config {
	var c config
	var showVersion bool
	fs := flag.CommandLine
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: procmgr [flags]\n\n"+
			"A process-manager sidecar driven by JSON-RPC 2.0 on stdin/stdout.\n"+
			"Every tool it starts dies with the host session. See docs/protocol.md.\n\nflags:\n")
		fs.PrintDefaults()
	}
	fs.IntVar(&c.parentPid, "parent-pid", 0, "pid of the host session to watch (default: the parent process)")
	fs.IntVar(&c.stdoutFd, "stdout-fd", -1, `inherited fd that "inherit" stdout writes to (default: the sidecar's stderr)`)
	fs.IntVar(&c.stderrFd, "stderr-fd", -1, `inherited fd that "inherit" stderr writes to (default: the sidecar's stderr)`)
	fs.StringVar(&c.logFile, "log-file", "", "append logs to this file instead of stderr")
	fs.StringVar(&c.tempDir, "temp-dir", "", "the session's temporary directory, made by the host: removed with everything in it when the session ends")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.framing, "framing", "line", `"line" (one JSON object per line) or "header" (Content-Length)`)
	fs.IntVar(&c.maxMessage, "max-message", 16<<20, "largest accepted message in bytes; longer ones are skipped")
	fs.Float64Var(&c.stopTimeout, "stop-timeout", manager.DefaultStopTimeout.Seconds(), "default seconds between the stop signal and SIGKILL")
	fs.BoolVar(&c.noCgroup, "no-cgroup", false, "do not put tools in cgroups even where cgroup v2 is writable")
	fs.BoolVar(&showVersion, "version", false, "print the version and exit")
	flag.Parse()
	if showVersion {
		fmt.Println("procmgr", version)
		os.Exit(0)
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "procmgr: unexpected arguments: %s\n", strings.Join(flag.Args(), " "))
		os.Exit(2)
	}
	return c
}

func run() int {
	c := parseFlags()
	log, err := newLogger(c.logFile, c.logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "procmgr:", err)
		return 2
	}
	fail := func(err error) int {
		log.Error("cannot start", "err", err)
		fmt.Fprintln(os.Stderr, "procmgr:", err)
		return 2
	}
	if c.maxMessage < 1024 {
		return fail(fmt.Errorf("--max-message %d is below 1024 bytes", c.maxMessage))
	}
	// Checked as the protocol checks every duration; 0: SIGKILL right after
	// the stop signal.
	stopTimeout, err := rpc.Seconds(c.stopTimeout)
	if err != nil {
		return fail(fmt.Errorf("--stop-timeout: %w", err))
	}
	hostOut, err := inheritedFile(c.stdoutFd, "stdout")
	if err != nil {
		return fail(err)
	}
	hostErr, err := inheritedFile(c.stderrFd, "stderr")
	if err != nil {
		return fail(err)
	}
	if c.parentPid == 0 {
		c.parentPid = os.Getppid()
	}
	// Lead a session of our own when the host did not give us one: a Ctrl-C
	// in the host's terminal must not reach the sidecar (it would stop every
	// tool), and the watchdog's sweep relies on the sidecar leading its
	// session. EPERM means we lead a process group already (started from a
	// shell, or with start_new_session): nothing to do.
	if _, err := unix.Setsid(); err != nil && err != unix.EPERM {
		log.Warn("setsid", "err", err)
	}

	session := newSessionID()
	if c.tempDir != "" {
		// Claimed first: from here on the directory is this session's to remove.
		if err := manager.ClaimTempDir(c.tempDir, session); err != nil {
			return fail(fmt.Errorf("--temp-dir: %w", err))
		}
		defer manager.RemoveTempDir(c.tempDir, session)
	}

	srv := jsonrpc.NewServer(log, jsonrpc.DefaultBudget)
	mgr, err := manager.New(manager.Config{
		Session:       session,
		StopTimeout:   &stopTimeout,
		InheritStdout: hostOut,
		InheritStderr: hostErr,
		// One event's notifications are queued, or dropped, together.
		OnEvent: func(ev manager.Event) {
			srv.NotifyGroup(func(notify func(string, any)) { rpc.Notify(notify, ev) })
		},
		Logger:  log,
		Cgroups: !c.noCgroup,
	})
	if err != nil {
		return fail(err)
	}
	defer startWatchdog(mgr, c, log)()
	litterRoot := "" // the system's temporary directory
	if c.tempDir != "" {
		litterRoot = filepath.Dir(c.tempDir)
	}
	go manager.SweepLitter(session, litterRoot, log)
	shutdownReplied := make(chan struct{})
	var replied sync.Once // two shutdown calls may both reply
	rpc.Register(srv, mgr, rpc.Options{
		Version:    version,
		Features:   features(mgr),
		OnShutdown: func() { replied.Do(func() { close(shutdownReplied) }) },

		CgroupOffReason: cgroupOffReason(c.noCgroup, mgr), // main_cgroup.go
	})
	// stdout stays open when the input ends: replies to calls in progress
	// and the last notifications still go out (see Drain below).
	stream, err := jsonrpc.NewStream(os.Stdin, os.Stdout, jsonrpc.StreamConfig{
		Framing: jsonrpc.Framing(c.framing), MaxMessage: c.maxMessage, Budget: jsonrpc.DefaultBudget, Log: log})
	if err != nil {
		return fail(err)
	}
	log.Info("serving", "version", version, "pid", os.Getpid(), "host_pid", c.parentPid, "session", mgr.Session())

	// Armed before serving: once a host has its first reply, the
	// parent-death signal is armed (a host thread may exit right after).
	hostGone := manager.WatchHost(c.parentPid, log)
	served := make(chan struct{})
	go func() { srv.Serve(context.Background(), stream); close(served) }()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)

	// drain gives the host the replies and notifications still owed, briefly:
	// a host that stopped reading must not keep the sidecar alive.
	drain := func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		srv.Drain(ctx, stream)
		cancel()
	}
	select {
	case <-shutdownReplied:
		drain()
		log.Info("shut down on request")
		return 0
	case <-served:
		log.Info("stdin closed: stopping every tool")
	case reason := <-hostGone:
		log.Info("host died: stopping every tool", "noticed_by", reason)
	case sig := <-sigs:
		log.Info("signalled: stopping every tool", "signal", sig.String())
	}
	n := mgr.Shutdown(context.Background(), manager.UseDefault)
	drain()
	log.Info("exiting", "stopped", n)
	return 0
}

// features lists what hello reports: the containment layers in force here.
func features(mgr *manager.Manager) []string {
	f := []string{"process-group", "env-attribution", "header-framing",
		"capture", "readiness", "restart", "stdin", "state-events", "stats"}
	if runtime.GOOS == "linux" {
		f = append(f, "pdeathsig", "subreaper")
	}
	if mgr.CgroupDir() != "" {
		f = append(f, "cgroup")
	}
	if mgr.WatchdogPid() != 0 {
		f = append(f, "watchdog")
	}
	return f
}

// stderrLog is the log's output without --log-file: stderr, never blocking.
var stderrLog = newLogSink(os.Stderr, 1<<20)

func newLogger(path, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	var w io.Writer = stderrLog
	if path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("--log-file: %w", err)
		}
		w = f
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl})), nil
}

// inheritedFile wraps an fd the host handed over for "inherit" output. It
// must be open; fds 0 and 1 are the protocol and are refused.
func inheritedFile(fd int, name string) (*os.File, error) {
	if fd < 0 {
		return os.Stderr, nil
	}
	if fd == 0 || fd == 1 {
		return nil, fmt.Errorf("--%s-fd %d is a protocol stream; tools never write there", name, fd)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return nil, fmt.Errorf("--%s-fd %d is not an open descriptor: %w", name, fd, err)
	}
	return os.NewFile(uintptr(fd), "host-"+name), nil
}

func newSessionID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
