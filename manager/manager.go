package manager

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"
)

// Config sets up a Manager.
type Config struct {
	// Session marks every tool (PROCMGR_SESSION) so that its descendants can be
	// found even after they leave the tool's process group. Required.
	Session string
	// StopTimeout is the default grace between the stop signal and SIGKILL
	// (nil: DefaultStopTimeout; 0: SIGKILL right after the stop signal).
	StopTimeout *time.Duration
	// InheritStdout and InheritStderr are where "inherit" output goes
	// (the sidecar's own stderr if nil; never the protocol stream).
	InheritStdout, InheritStderr *os.File
	// OnEvent is called for every state change of every tool (an exit
	// included, whoever caused it), in Seq order, sometimes from the reaper:
	// it must return at once (queue, never block).
	OnEvent func(Event)
	Logger  *slog.Logger
	// Cgroups asks for one cgroup v2 per tool where the hierarchy is writable
	// (see cgroupSet); the manager falls back silently where it is not.
	Cgroups bool
}

// DefaultStopTimeout applies when neither the tool nor the Config sets one.
const DefaultStopTimeout = 3 * time.Second

// Manager starts, tracks and stops tools by tag. Its methods are safe for
// concurrent use.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	mon     *monitor
	spawner *spawner
	procs   *procTable
	devnull *os.File
	ownPgid int
	cg      *cgroupSet // nil: process groups and environment attribution only
	cgOff   string     // why cg is nil (CgroupOffReason)
	wd      watchdog   // the session watchdog (watchdog.go)
	acct    accounting // attributes orphans' CPU to runs (stats.go)
	orph    orphanSet  // adopted orphans (orphans.go)

	mu       sync.Mutex
	tools    map[string]*tool // a nil value reserves a tag while its create is in flight
	closing  bool
	creating sync.WaitGroup // creates in flight; Shutdown waits for them
	// starting holds, per reserved tag, a channel closed once its create
	// knows whether the tool started (create.go).
	starting map[string]chan struct{}

	evMu sync.Mutex // numbers and delivers events in order
	seq  uint64

	ctx    context.Context // ends at Shutdown: background work (restart readiness) stops
	cancel context.CancelFunc
}

// New readies the process to manage tools (on Linux it becomes a child
// subreaper) and starts the reaper.
func New(cfg Config) (*Manager, error) {
	if cfg.Session == "" {
		return nil, fmt.Errorf("%w: Config.Session is empty", ErrInvalid)
	}
	if cfg.StopTimeout == nil {
		d := DefaultStopTimeout
		cfg.StopTimeout = &d
	} else if *cfg.StopTimeout < 0 {
		return nil, fmt.Errorf("%w: Config.StopTimeout is negative", ErrInvalid)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.InheritStdout == nil {
		cfg.InheritStdout = os.Stderr
	}
	if cfg.InheritStderr == nil {
		cfg.InheritStderr = os.Stderr
	}
	if cfg.OnEvent == nil {
		cfg.OnEvent = func(Event) {}
	}
	if err := host.prepare(); err != nil {
		return nil, fmt.Errorf("prepare the sidecar process: %w", err)
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	var cg *cgroupSet
	cgOff := "cgroup mode was not asked for (Config.Cgroups)"
	if cfg.Cgroups {
		var off *cgroupOffError
		if cg, off = openCgroupSet(cfg.Session); off != nil {
			cfg.Logger.Info("cgroup mode off", "reason", off)
			cgOff = off.reason
		} else {
			cgOff = ""
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		ctx:     ctx,
		cancel:  cancel,
		cg:      cg,
		cgOff:   cgOff,
		cfg:     cfg,
		log:     cfg.Logger,
		mon:     newMonitor(cfg.Logger),
		spawner: newSpawner(),
		devnull: devnull,
		ownPgid: syscall.Getpgrp(),
		tools:   make(map[string]*tool),
	}
	m.procs = newProcTable(cfg.Session, m.toolGroups)
	go m.watchOrphans()
	return m, nil
}

// Session is the id every tool carries in PROCMGR_SESSION.
func (m *Manager) Session() string { return m.cfg.Session }

// CgroupDir is the session's cgroup directory, or "" when cgroup mode is off.
func (m *Manager) CgroupDir() string {
	if m.cg == nil {
		return ""
	}
	return m.cg.Dir()
}

// CgroupOffReason says why cgroup mode is off, in words a user can act on
// (hello's cgroup.reason): "" when it is on.
func (m *Manager) CgroupOffReason() string { return m.cgOff }

// lookup returns the tool under tag, or ErrNoSuchTag.
func (m *Manager) lookup(tag string) (*tool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t := m.tools[tag]; t != nil {
		return t, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrNoSuchTag, tag)
}

// Running reports whether tag is in use: true from a successful Create until
// Stop releases it, including after the tool exited on its own.
func (m *Manager) Running(tag string) bool {
	_, err := m.lookup(tag)
	return err == nil
}

// IsAlive reports whether the tool's main process has not exited.
func (m *Manager) IsAlive(tag string) (bool, error) {
	t, err := m.lookup(tag)
	if err != nil {
		return false, err
	}
	return t.info().Alive, nil
}

// Fetch returns the tool's snapshot; false for an unknown tag.
func (m *Manager) Fetch(tag string) (Info, bool) {
	t, err := m.lookup(tag)
	if err != nil {
		return Info{}, false
	}
	return t.info(), true
}

// List returns every tool, sorted by tag.
func (m *Manager) List() []Info {
	tools := m.sortedTools()
	out := make([]Info, len(tools))
	for i, t := range tools {
		out[i] = t.info()
	}
	return out
}

// Wait returns once the tool has exited for good — its main process exited
// and no restart will follow (or it is fatal, or stopped) — or when ctx ends,
// with the snapshot as it then stands.
func (m *Manager) Wait(ctx context.Context, tag string) (Info, error) {
	t, err := m.lookup(tag)
	if err != nil {
		return Info{}, err
	}
	select {
	case <-t.settled:
	case <-ctx.Done():
	}
	return t.info(), nil
}

// Signal sends sig to the tool's process group and to the members that left
// it. A tool of which nothing remains is not an error (like signalling an
// exited subprocess.Popen).
func (m *Manager) Signal(tag string, sig syscall.Signal) error {
	t, err := m.lookup(tag)
	if err != nil {
		return err
	}
	m.signalTree(t, t.current(), sig)
	return nil
}

// sortedTools is snapshotTools sorted by tag.
func (m *Manager) sortedTools() []*tool {
	tools := m.snapshotTools()
	sort.Slice(tools, func(i, j int) bool { return tools[i].tag < tools[j].tag })
	return tools
}
