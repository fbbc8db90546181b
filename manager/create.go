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

// Create starts a tool and returns once it has been exec'd. A tool that
// cannot be started gives an error wrapping ErrSpawn with the OS reason, and
// leaves the tag free. The tool leads its own process group, reads /dev/null,
// inherits no descriptor but 0, 1 and 2, and carries PROCMGR_TAG and
// PROCMGR_SESSION in its environment.
func (m *Manager) Create(spec Spec) (Info, error) {
	if err := spec.validate(); err != nil {
		return Info{}, err
	}
	if err := m.reserve(spec.Tag); err != nil {
		return Info{}, err
	}
	defer m.creating.Done()
	t, err := m.start(spec)
	m.mu.Lock()
	if err != nil {
		delete(m.tools, spec.Tag)
	} else {
		m.tools[spec.Tag] = t
	}
	m.mu.Unlock()
	if err != nil {
		return Info{}, err
	}
	m.log.Info("started", "tag", t.tag, "pid", t.pid, "argv", t.argv)
	return t.info(), nil
}

// reserve claims tag for a create in flight, so two creates cannot race for it.
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
	m.creating.Add(1)
	return nil
}

func (m *Manager) start(spec Spec) (*tool, error) {
	env := toolEnv(spec.Env, spec.Tag, m.cfg.Session)
	path, err := lookPath(spec.Argv[0], envValue(env, "PATH"), spec.Dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrSpawn, spec.Argv[0], err)
	}
	if spec.Dir != "" {
		if st, err := os.Stat(spec.Dir); err != nil {
			return nil, fmt.Errorf("%w: cwd %s: %v", ErrSpawn, spec.Dir, unwrapPathErr(err))
		} else if !st.IsDir() {
			return nil, fmt.Errorf("%w: cwd %s: not a directory", ErrSpawn, spec.Dir)
		}
	}
	stdout, stderr, closeOutputs, err := m.openOutputs(spec)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSpawn, err)
	}
	defer closeOutputs()

	t := &tool{
		tag:         spec.Tag,
		argv:        append([]string(nil), spec.Argv...),
		stopSignal:  spec.StopSignal,
		stopTimeout: spec.StopTimeout,
		state:       StateRunning,
		exited:      make(chan struct{}),
	}
	if t.stopSignal == 0 {
		t.stopSignal = syscall.SIGTERM
	}
	if t.stopTimeout == 0 {
		t.stopTimeout = m.cfg.StopTimeout
	}
	attr := &syscall.ProcAttr{
		Dir:   spec.Dir,
		Env:   env,
		Files: []uintptr{m.devnull.Fd(), stdout.Fd(), stderr.Fd()},
	}
	cgFD := -1
	if m.cg != nil {
		if tcg, fd, err := m.cg.newTool(); err == nil {
			t.cg, cgFD = tcg, fd
			defer unix.Close(fd)
		} else {
			m.log.Warn("no cgroup for tool; falling back to its process group", "tag", t.tag, "err", err)
		}
	}
	err = m.fork(t, path, spec.Argv, attr, cgFD)
	if err != nil && t.cg != nil && cloneIntoCgroupUnsupported(err) {
		m.log.Warn("cannot clone into a cgroup; this tool runs without one", "tag", t.tag, "err", err)
		t.cg.release()
		t.cg = nil
		err = m.fork(t, path, spec.Argv, attr, -1)
	}
	if err != nil {
		if t.cg != nil {
			t.cg.release()
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrSpawn, path, err)
	}
	return t, nil
}

// fork starts the tool on the spawner thread, tracked by the Monitor from
// the instant it exists.
func (m *Manager) fork(t *tool, path string, argv []string, attr *syscall.ProcAttr, cgroupFD int) error {
	attr.Sys = host.toolAttr(cgroupFD)
	var err error
	m.spawner.do(func() {
		_, err = m.mon.Track(func() (int, error) {
			pid, err := syscall.ForkExec(path, argv, attr)
			t.pid = pid
			t.startedAt = time.Now()
			return pid, err
		}, func(e Exit) { m.cfg.OnExit(t.markExited(e)) })
	})
	return err
}

// cloneIntoCgroupUnsupported reports errors of clone3's CLONE_INTO_CGROUP
// itself (old kernel, a cgroup that refuses members), as opposed to the
// tool's exec failing.
func cloneIntoCgroupUnsupported(err error) bool {
	return errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EOPNOTSUPP) ||
		errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.EINVAL)
}

// openOutputs resolves the stdout and stderr destinations. The returned
// closer releases the sidecar's copies once the child holds its own.
func (m *Manager) openOutputs(spec Spec) (stdout, stderr *os.File, closer func(), err error) {
	var opened []*os.File
	closer = func() {
		for _, f := range opened {
			f.Close()
		}
	}
	open := func(o Output, inherit *os.File) (*os.File, error) {
		switch o.Kind {
		case Inherit:
			return inherit, nil
		case File:
			path := o.Path
			if !filepath.IsAbs(path) && spec.Dir != "" {
				path = filepath.Join(spec.Dir, path)
			}
			flags := os.O_WRONLY | os.O_CREATE
			if o.Append {
				flags |= os.O_APPEND
			} else {
				flags |= os.O_TRUNC
			}
			f, err := os.OpenFile(path, flags, 0o644)
			if err != nil {
				return nil, fmt.Errorf("output file %s: %v", path, unwrapPathErr(err))
			}
			opened = append(opened, f)
			return f, nil
		default:
			return m.devnull, nil
		}
	}
	if stdout, err = open(spec.Stdout, m.cfg.InheritStdout); err != nil {
		closer()
		return nil, nil, nil, err
	}
	if spec.Stderr.Kind == ToStdout {
		return stdout, stdout, closer, nil
	}
	if stderr, err = open(spec.Stderr, m.cfg.InheritStderr); err != nil {
		closer()
		return nil, nil, nil, err
	}
	return stdout, stderr, closer, nil
}

// toolEnv returns env with PROCMGR_TAG and PROCMGR_SESSION set (replacing any
// values the caller passed: they are the sidecar's marks, not the caller's).
func toolEnv(env []string, tag, session string) []string {
	out := make([]string, 0, len(env)+2)
	for _, kv := range env {
		if strings.HasPrefix(kv, EnvTag+"=") || strings.HasPrefix(kv, EnvSession+"=") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, EnvTag+"="+tag, EnvSession+"="+session)
}

func envValue(env []string, name string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], name+"="); ok {
			return v
		}
	}
	return ""
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
	return "", errors.New("executable file not found in $PATH")
}

func executable(path string) error {
	st, err := os.Stat(path)
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
