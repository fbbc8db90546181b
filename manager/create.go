package manager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Create starts a tool and returns once it has been exec'd — and, when
// spec.Ready is set, once it is ready. A tool that cannot be started gives an
// error wrapping ErrSpawn with the OS reason, and leaves the tag free; one
// that does not become ready in time (or exits first) is stopped and gives
// ErrNotReady, and the tag is free again.
//
// The tool leads its own process group, inherits no descriptor but 0, 1 and
// 2, and carries PROCMGR_TAG and PROCMGR_SESSION in its environment.
//
// Create is Reserve followed by the reservation's Create.
func (m *Manager) Create(ctx context.Context, spec Spec) (Info, error) {
	r, err := m.Reserve(spec)
	if err != nil {
		return Info{}, err
	}
	return r.Create(ctx)
}

// Reservation is a tag claimed by Reserve for one create. Until its Create
// has spawned the tool (or failed to) or it is released, the tag is in use
// for other creates, and stops and lookups that wait for a started tool (see
// lookupStarted) wait for it, at most reservedWait. Shutdown waits for every
// reservation to be used or released.
type Reservation struct {
	m    *Manager
	spec Spec
	done atomic.Bool // Create or Release has taken it
}

// Reserve validates spec and claims its tag, without starting anything: the
// first half of Create, cheap and non-blocking, for a caller that must claim
// tags in the order requests arrive and start tools concurrently. Its errors
// are Create's, checked in the same order: ErrInvalid, then ErrShuttingDown,
// then ErrTagInUse. The caller must call the reservation's Create or Release.
func (m *Manager) Reserve(spec Spec) (*Reservation, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	if err := m.reserve(spec.Tag); err != nil {
		return nil, err
	}
	return &Reservation{m: m, spec: spec}, nil
}

// Create starts the reserved tool, as Manager.Create does after reserving.
// It gives ErrReservationDone, starting nothing, if the reservation was
// already used or released.
func (r *Reservation) Create(ctx context.Context) (Info, error) {
	if !r.done.CompareAndSwap(false, true) {
		return Info{}, fmt.Errorf("%w: %q", ErrReservationDone, r.spec.Tag)
	}
	m, spec := r.m, r.spec
	t, err := m.newTool(spec)
	if err == nil {
		if err = m.startRun(t, firstRun); err != nil {
			t.discard()
		}
	}
	if err != nil {
		m.unreserve(spec.Tag, nil)
		return Info{}, err
	}
	m.unreserve(spec.Tag, t)
	run := t.current()
	m.log.Info("started", "tag", t.tag, "pid", run.pid, "argv", t.spec.Argv)
	if spec.Ready != nil {
		if err := m.awaitReady(ctx, t, run); err != nil {
			// Stop, or wait for the stop that ended the wait: the tag is
			// free when create answers, and the captures hold everything.
			m.Stop(context.WithoutCancel(ctx), t.tag, 0, UseDefault)
			if nre, ok := err.(*NotReadyError); ok {
				nre.addOutput(t)
			}
			return Info{}, err
		}
		m.emit(EventReady, t.info())
	}
	return t.info(), nil
}

// Release frees the reserved tag without starting anything, for a create
// that will not run after all: stops and lookups waiting on it then find
// no such tag. It is a no-op after Create or another Release.
func (r *Reservation) Release() {
	if r.done.CompareAndSwap(false, true) {
		r.m.unreserve(r.spec.Tag, nil)
	}
}

// reserve claims tag for a create in flight, so two creates cannot race for
// it, and counts the create so Shutdown can wait for it.
func (m *Manager) reserve(tag string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return ErrShuttingDown
	}
	if _, taken := m.tools[tag]; taken {
		return fmt.Errorf("%w: %q", ErrTagInUse, tag)
	}
	m.tools[tag] = nil
	if m.starting == nil {
		m.starting = make(map[string]chan struct{})
	}
	m.starting[tag] = make(chan struct{})
	m.creating.Add(1)
	return nil
}

// unreserve ends a reservation of tag: the tag holds t, or is free if t is
// nil. Those waiting in lookupStarted are woken.
func (m *Manager) unreserve(tag string, t *tool) {
	m.mu.Lock()
	if t == nil {
		delete(m.tools, tag)
	} else {
		m.tools[tag] = t
	}
	close(m.starting[tag])
	delete(m.starting, tag)
	m.mu.Unlock()
	m.creating.Done()
}

// lookupStarted is lookup, except that a tag whose create is still spawning
// (reserved, no tool yet) is waited for — until that create knows whether
// the tool started, ctx ends or reservedWait passes: a stop sent right after
// a create (a host interrupting it) must find the tool, not miss it.
func (m *Manager) lookupStarted(ctx context.Context, tag string) (*tool, error) {
	timer := time.NewTimer(reservedWait)
	defer timer.Stop()
	for {
		m.mu.Lock()
		t, reserved := m.tools[tag]
		started := m.starting[tag]
		m.mu.Unlock()
		if t != nil || !reserved {
			return m.lookup(tag)
		}
		select {
		case <-started: // a tool now, or the tag free (or taken by a newer create: wait again)
		case <-timer.C:
			return m.lookup(tag)
		case <-ctx.Done():
			return m.lookup(tag)
		}
	}
}

// reservedWait bounds how long a stop waits for a create that is spawning.
const reservedWait = 10 * time.Second

// newTool resolves everything that holds for every run of the tool.
func (m *Manager) newTool(spec Spec) (*tool, error) {
	t := &tool{
		tag:         spec.Tag,
		spec:        spec,
		env:         toolEnv(spec.Env, spec.Tag, m.cfg.Session),
		stopSignal:  spec.StopSignal,
		stopTimeout: orDefault(spec.StopTimeout, *m.cfg.StopTimeout),
		settled:     make(chan struct{}),
		stopBegun:   make(chan struct{}),
		state:       StateRunning,
	}
	t.spec.Argv = append([]string(nil), spec.Argv...)
	if t.stopSignal == 0 {
		t.stopSignal = syscall.SIGTERM
	}
	var err error
	if t.path, err = lookPath(spec.Argv[0], envValue(t.env, "PATH"), spec.Dir); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrSpawn, spec.Argv[0], err)
	}
	if spec.Dir != "" {
		if st, err := os.Stat(spec.Dir); err != nil {
			return nil, fmt.Errorf("%w: cwd %s: %v", ErrSpawn, spec.Dir, unwrapPathErr(err))
		} else if !st.IsDir() {
			return nil, fmt.Errorf("%w: cwd %s: not a directory", ErrSpawn, spec.Dir)
		}
	}
	if spec.Stdout.Kind == Captured {
		if t.stdout, err = newCapture(spec.Stdout.Capture); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSpawn, err)
		}
	}
	if spec.Stderr.Kind == Captured {
		if t.stderr, err = newCapture(spec.Stderr.Capture); err != nil {
			t.discard()
			return nil, fmt.Errorf("%w: %v", ErrSpawn, err)
		}
	}
	if m.cg != nil {
		if t.cg, err = m.cg.newTool(); err != nil {
			m.log.Warn("no cgroup for tool; its process group and marks contain it", "tag", t.tag, "err", err)
			t.cg = nil
		}
	}
	return t, nil
}

// discard releases what newTool acquired, for a tool that never ran.
func (t *tool) discard() {
	if t.stdout != nil {
		t.stdout.close()
	}
	if t.stderr != nil {
		t.stderr.close()
	}
	if t.cg != nil {
		t.cg.release()
	}
}

// toolEnv returns env with PROCMGR_TAG and PROCMGR_SESSION set (replacing any
// values the caller passed: they are the sidecar's marks, not the caller's).
func toolEnv(env []string, tag, session string) []string {
	return append(withoutMarks(env), envTag+"="+tag, envSession+"="+session)
}

func envValue(env []string, name string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], name+"="); ok {
			return v
		}
	}
	return ""
}

// cloneIntoCgroupUnsupported reports errors of clone3's CLONE_INTO_CGROUP
// itself (old kernel, a cgroup that refuses members), as opposed to the
// tool's exec failing.
func cloneIntoCgroupUnsupported(err error) bool {
	return errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EOPNOTSUPP) ||
		errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.EINVAL)
}

// readyPoll is how often a path or tcp readiness condition is probed.
const readyPoll = 10 * time.Millisecond
