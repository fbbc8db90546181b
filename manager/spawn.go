package manager

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// runKind says which run startRun starts, which decides how file outputs
// are opened.
type runKind int

const (
	firstRun   runKind = iota // create's: a file output is truncated unless it appends
	restartRun                // a restart's: file outputs are appended to, never truncated
)

// startRun starts one run of the tool's main process: it opens the run's
// stdin and outputs, forks on the spawner thread (tracked by the monitor from
// the instant the process exists) and starts the capture pumps.
func (m *Manager) startRun(t *tool, kind runKind) error {
	ends, err := m.openRunFiles(t, kind)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrSpawn, err)
	}
	defer ends.closeChildEnds()
	attr := &syscall.ProcAttr{
		Dir:   t.spec.Dir,
		Env:   t.env,
		Files: []uintptr{ends.stdin.Fd(), ends.stdout.Fd(), ends.stderr.Fd()},
	}
	r := &run{exited: make(chan struct{})}
	err = m.fork(t, r, attr)
	if err != nil && t.cg != nil && cloneIntoCgroupUnsupported(err) {
		m.log.Warn("cannot clone into a cgroup; this tool runs without one", "tag", t.tag, "err", err)
		t.cg.release()
		t.cg = nil
		err = m.fork(t, r, attr)
	}
	if err != nil {
		ends.closeParentEnds()
		return fmt.Errorf("%w: %s: %v", ErrSpawn, t.path, err)
	}
	ends.startPumps(t)
	t.mu.Lock()
	old := t.stdin
	t.stdin = ends.stdinWriter
	t.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// fork runs ForkExec on the spawner thread inside monitor.Track, and makes r
// the tool's current run before any reap can see it exit. The run is cloned
// into the tool's cgroup, if it has one.
func (m *Manager) fork(t *tool, r *run, attr *syscall.ProcAttr) error {
	cgFD := -1
	if t.cg != nil {
		fd, err := unix.Open(t.cg.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		cgFD = fd
	}
	attr.Sys = host.toolAttr(cgFD)
	var err error
	m.spawner.do(func() {
		_, err = m.mon.Track(func() (int, error) {
			pid, err := syscall.ForkExec(t.path, t.spec.Argv, attr)
			if err != nil {
				return 0, err
			}
			r.pid, r.startedAt = pid, time.Now()
			t.mu.Lock()
			t.run = r
			if t.stopDone == nil {
				t.state = StateRunning
			}
			in := t.infoLocked()
			t.mu.Unlock()
			// Still under the monitor's lock: no reap of this run, and so no
			// "exited" event, can come before "started".
			m.emit(EventStarted, in)
			return pid, nil
		}, func(e Exit) { m.onRunExit(t, r, e) })
	})
	return err
}

// runFiles are one run's standard descriptors: the child's ends (closed in
// the sidecar once the child holds them) and the sidecar's ends of pipes.
type runFiles struct {
	stdin, stdout, stderr *os.File
	childOwned            []*os.File // opened for this run only: closed after the fork
	stdinWriter           *os.File
	stdoutReader          *os.File
	stderrReader          *os.File
}

func (m *Manager) openRunFiles(t *tool, kind runKind) (*runFiles, error) {
	f := &runFiles{stdin: m.devnull}
	fail := func(err error) (*runFiles, error) {
		f.closeChildEnds()
		f.closeParentEnds()
		return nil, err
	}
	if t.spec.StdinPipe {
		r, w, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		f.stdin, f.stdinWriter = r, w
		f.childOwned = append(f.childOwned, r)
	}
	var err error
	if f.stdout, f.stdoutReader, err = m.openOutput(t, t.spec.Stdout, m.cfg.InheritStdout, kind, f); err != nil {
		return fail(err)
	}
	if t.spec.Stderr.Kind == ToStdout {
		f.stderr = f.stdout
		return f, nil
	}
	if f.stderr, f.stderrReader, err = m.openOutput(t, t.spec.Stderr, m.cfg.InheritStderr, kind, f); err != nil {
		return fail(err)
	}
	return f, nil
}

// openOutput returns the child's end for one output, and for a capture the
// sidecar's read end of its pipe.
func (m *Manager) openOutput(t *tool, o Output, inherit *os.File, kind runKind, f *runFiles) (child, reader *os.File, err error) {
	switch o.Kind {
	case Inherit:
		return inherit, nil, nil
	case Captured:
		r, w, err := os.Pipe()
		if err != nil {
			return nil, nil, err
		}
		f.childOwned = append(f.childOwned, w)
		return w, r, nil
	case File:
		path := o.Path
		if !filepath.IsAbs(path) && t.spec.Dir != "" {
			path = filepath.Join(t.spec.Dir, path)
		}
		flags := os.O_WRONLY | os.O_CREATE
		if o.Append || kind == restartRun {
			flags |= os.O_APPEND
		} else {
			flags |= os.O_TRUNC
		}
		w, err := os.OpenFile(path, flags, 0o644)
		if err != nil {
			return nil, nil, fmt.Errorf("output file %s: %v", path, unwrapPathErr(err))
		}
		f.childOwned = append(f.childOwned, w)
		return w, nil, nil
	default:
		return m.devnull, nil, nil
	}
}

func (f *runFiles) closeChildEnds() {
	for _, c := range f.childOwned {
		c.Close()
	}
	f.childOwned = nil
}

func (f *runFiles) closeParentEnds() {
	for _, c := range []*os.File{f.stdinWriter, f.stdoutReader, f.stderrReader} {
		if c != nil {
			c.Close()
		}
	}
}

// startPumps copies captured pipes into the tool's rings until EOF.
func (f *runFiles) startPumps(t *tool) {
	if f.stdoutReader != nil {
		t.stdout.reopen()
		go t.stdout.pump(f.stdoutReader)
	}
	if f.stderrReader != nil {
		t.stderr.reopen()
		go t.stderr.pump(f.stderrReader)
	}
}

// lookPath finds file like exec.LookPath, but in the tool's PATH rather than
// the sidecar's. A name with a slash is taken as is (relative to dir).
func lookPath(file, pathEnv, dir string) (string, error) {
	if strings.Contains(file, "/") {
		p := file
		if !filepath.IsAbs(p) && dir != "" {
			p = filepath.Join(dir, p)
		}
		if err := executable(p); err != nil {
			return "", err
		}
		return file, nil
	}
	if pathEnv == "" {
		pathEnv = "/usr/local/bin:/usr/bin:/bin"
	}
	var firstErr error
	for _, d := range filepath.SplitList(pathEnv) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, file)
		err := executable(p)
		if err == nil {
			return p, nil
		}
		if firstErr == nil && !errors.Is(err, fs.ErrNotExist) {
			firstErr = err
		}
	}
	if firstErr != nil {
		return "", firstErr
	}
	return "", fmt.Errorf("%w in $PATH", ErrExecNotFound)
}

func executable(path string) error {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %w", ErrExecNotFound, unwrapPathErr(err))
	}
	if err != nil {
		return unwrapPathErr(err)
	}
	if st.IsDir() {
		return errors.New("is a directory")
	}
	if st.Mode()&0o111 == 0 {
		return fs.ErrPermission
	}
	return nil
}

func unwrapPathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
