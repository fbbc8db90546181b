//go:build linux

package micro

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"procmgr/manager"
	"procmgr/rpc"
	"procmgr/rpc/jsonrpc"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// --- spawning ----------------------------------------------------------------

// forkExecTrue starts /bin/true with attr and reaps it (outside the timer).
// ECHILD is ignored: a manager's reaper left running by an earlier benchmark
// in this process may have reaped it first.
func forkExecTrue(b *testing.B, attr *syscall.ProcAttr) {
	b.Helper()
	pid, err := syscall.ForkExec("/bin/true", []string{"/bin/true"}, attr)
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	var ws syscall.WaitStatus
	syscall.Wait4(pid, &ws, 0, nil)
	b.StartTimer()
}

func devnullAttr(b *testing.B) (*syscall.ProcAttr, func()) {
	f, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	return &syscall.ProcAttr{Env: []string{"PATH=/usr/bin:/bin"}, Files: []uintptr{f.Fd(), f.Fd(), f.Fd()}}, func() { f.Close() }
}

// The floor of a Go spawn: vfork+exec of /bin/true, waiting for the exec.
func BenchmarkForkExecPlain(b *testing.B) {
	attr, done := devnullAttr(b)
	defer done()
	for i := 0; i < b.N; i++ {
		forkExecTrue(b, attr)
	}
}

// What the sidecar's toolAttr adds without cgroups: setpgid and a parent-death signal.
func BenchmarkForkExecPgidPdeathsig(b *testing.B) {
	attr, done := devnullAttr(b)
	defer done()
	attr.Sys = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	for i := 0; i < b.N; i++ {
		forkExecTrue(b, attr)
	}
}

// The same from a goroutine locked to its thread, reached over a channel,
// as the sidecar's spawner does (golang/go#27505).
func BenchmarkForkExecLockedThread(b *testing.B) {
	attr, done := devnullAttr(b)
	defer done()
	attr.Sys = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	work := make(chan chan int)
	go func() {
		runtime.LockOSThread()
		for reply := range work {
			pid, err := syscall.ForkExec("/bin/true", []string{"/bin/true"}, attr)
			if err != nil {
				pid = -1
			}
			reply <- pid
		}
	}()
	defer close(work)
	reply := make(chan int)
	for i := 0; i < b.N; i++ {
		work <- reply
		pid := <-reply
		if pid < 0 {
			b.Fatal("fork failed")
		}
		b.StopTimer()
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, 0, nil)
		b.StartTimer()
	}
}

// clone3 into a fresh cgroup, as cgroup mode does: mkdir + open + CLONE_INTO_CGROUP,
// and the rmdir after the tool is gone (outside the timer).
func BenchmarkForkExecIntoNewCgroup(b *testing.B) {
	base := cgroupBase(b)
	attr, done := devnullAttr(b)
	defer done()
	for i := 0; i < b.N; i++ {
		dir := filepath.Join(base, fmt.Sprintf("t%d", i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		attr.Sys = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, UseCgroupFD: true, CgroupFD: fd}
		forkExecTrue(b, attr)
		syscall.Close(fd)
		b.StopTimer()
		os.Remove(dir)
		b.StartTimer()
	}
}

// Only the cgroup bookkeeping: mkdir, open, close (rmdir outside the timer).
func BenchmarkCgroupMkdir(b *testing.B) {
	base := cgroupBase(b)
	for i := 0; i < b.N; i++ {
		dir := filepath.Join(base, fmt.Sprintf("m%d", i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		syscall.Close(fd)
		b.StopTimer()
		os.Remove(dir)
		b.StartTimer()
	}
}

// cgroupBase makes a scratch cgroup v2 directory below our own, or skips.
func cgroupBase(b *testing.B) string {
	b.Helper()
	mount := ""
	if data, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			pre, post, _ := strings.Cut(line, " - ")
			pf, qf := strings.Fields(pre), strings.Fields(post)
			if len(pf) >= 5 && len(qf) >= 1 && qf[0] == "cgroup2" {
				mount = pf[4]
			}
		}
	}
	if mount == "" {
		b.Skip("no cgroup2 mount")
	}
	own := "/"
	if data, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if p, ok := strings.CutPrefix(line, "0::"); ok {
				own = p
			}
		}
	}
	dir := filepath.Join(mount, own, fmt.Sprintf("procmgr-micro-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Skipf("cgroup not writable: %v", err)
	}
	b.Cleanup(func() {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			os.Remove(filepath.Join(dir, e.Name()))
		}
		os.Remove(dir)
	})
	return dir
}

// --- the manager, in process ---------------------------------------------------

// One manager per process: a manager's reaper waits for any child, so two
// managers in one process would steal each other's exit statuses. Cgroup
// mode is on unless MICRO_CGROUPS=0 (run the benchmarks twice to compare).
var (
	sharedOnce sync.Once
	shared     *manager.Manager
	sharedErr  error
	tagSeq     atomic.Int64
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.Shutdown(context.Background(), 0)
	}
	os.Exit(code)
}

func newManager(b *testing.B) *manager.Manager {
	b.Helper()
	sharedOnce.Do(func() {
		shared, sharedErr = manager.New(manager.Config{
			Session: fmt.Sprintf("micro%d", os.Getpid()),
			Logger:  quiet,
			Cgroups: os.Getenv("MICRO_CGROUPS") != "0",
		})
	})
	if sharedErr != nil {
		b.Fatal(sharedErr)
	}
	return shared
}

func newTag(prefix string) string { return fmt.Sprintf("%s%d", prefix, tagSeq.Add(1)) }

// manager.Create of /bin/true, in process (no JSON-RPC, no pipe); the stop
// is outside the timer.
func BenchmarkManagerCreate(b *testing.B) {
	m := newManager(b)
	ctx := context.Background()
	env := []string{"PATH=/usr/bin:/bin"}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tag := newTag("c")
		if _, err := m.Create(ctx, manager.Spec{Tag: tag, Argv: []string{"/bin/true"}, Env: env}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		m.Stop(ctx, tag, 0, 0)
		b.StartTimer()
	}
}

// manager.Stop of a tool that honours SIGTERM (sleep), in process.
func BenchmarkManagerStopSleep(b *testing.B) {
	m := newManager(b)
	ctx := context.Background()
	env := []string{"PATH=/usr/bin:/bin"}
	for i := 0; i < b.N; i++ {
		tag := newTag("s")
		b.StopTimer()
		if _, err := m.Create(ctx, manager.Spec{Tag: tag, Argv: []string{"/bin/sleep", "600"}, Env: env}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := m.Stop(ctx, tag, 0, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// manager.List with 1000 tools (snapshots only, no JSON).
func BenchmarkManagerList1000(b *testing.B) {
	m := newManager(b)
	ctx := context.Background()
	env := []string{"PATH=/usr/bin:/bin"}
	var tags []string
	for i := 0; i < 1000; i++ {
		tag := newTag("l")
		if _, err := m.Create(ctx, manager.Spec{Tag: tag, Argv: []string{"/bin/sleep", "600"}, Env: env}); err != nil {
			b.Fatal(err)
		}
		tags = append(tags, tag)
	}
	defer func() {
		b.StopTimer()
		for _, tag := range tags {
			m.Stop(ctx, tag, syscall.SIGKILL, 0)
		}
	}()
	n := len(m.List())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if got := m.List(); len(got) != n {
			b.Fatalf("list: %d, want %d", len(got), n)
		}
	}
}

// --- JSON-RPC, in process over real pipes ----------------------------------------

type pipeServer struct {
	w   *os.File      // client's write end (the server's stdin)
	r   *bufio.Reader // client's read end (the server's stdout)
	all []*os.File
}

func (p *pipeServer) close() {
	for _, f := range p.all {
		f.Close()
	}
}

func (p *pipeServer) roundTrip(b *testing.B, req []byte) []byte {
	if _, err := p.w.Write(req); err != nil {
		b.Fatal(err)
	}
	line, err := p.r.ReadBytes('\n')
	if err != nil {
		b.Fatal(err)
	}
	return line
}

// startRPC serves the real protocol (rpc, rpc/jsonrpc, manager) on a pair of pipes.
func startRPC(b *testing.B) *pipeServer {
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	m := newManager(b)
	srv := jsonrpc.NewServer(quiet, 0)
	rpc.Register(srv, m, rpc.Options{Version: "micro"})
	stream, err := jsonrpc.NewStream(inR, outW, jsonrpc.StreamConfig{Framing: jsonrpc.FramingLine, MaxMessage: 16 << 20, Log: quiet})
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(context.Background(), stream)
	p := &pipeServer{w: inW, r: bufio.NewReader(outR), all: []*os.File{inR, inW, outR, outW}}
	b.Cleanup(p.close)
	return p
}

// startEcho is the floor on the same pipes: one goroutine echoing each line.
func startEcho(b *testing.B) *pipeServer {
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	go func() {
		br := bufio.NewReader(inR)
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if _, err := outW.Write(line); err != nil {
				return
			}
		}
	}()
	p := &pipeServer{w: inW, r: bufio.NewReader(outR), all: []*os.File{inR, inW, outR, outW}}
	b.Cleanup(p.close)
	return p
}

var runningReq = []byte(`{"jsonrpc":"2.0","id":7,"method":"running","params":{"tag":"nope"}}` + "\n")

// One `running` round trip through the sidecar's JSON-RPC stack.
func BenchmarkRPCRunning(b *testing.B) {
	p := startRPC(b)
	p.roundTrip(b, runningReq)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.roundTrip(b, runningReq)
	}
}

// The floor of the above: the same pipes, a goroutine that echoes the line.
func BenchmarkRPCEchoFloor(b *testing.B) {
	p := startEcho(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.roundTrip(b, runningReq)
	}
}

// Throughput with 16 requests in flight through the JSON-RPC stack.
func BenchmarkRPCPipelined16(b *testing.B) {
	p := startRPC(b)
	p.roundTrip(b, runningReq)
	const window = 16
	b.ResetTimer()
	sent, got := 0, 0
	for sent < window && sent < b.N {
		p.w.Write(runningReq)
		sent++
	}
	for got < b.N {
		if _, err := p.r.ReadBytes('\n'); err != nil {
			b.Fatal(err)
		}
		got++
		if sent < b.N {
			p.w.Write(runningReq)
			sent++
		}
	}
}

// create of /bin/true through the JSON-RPC stack (the stop is outside the
// timer): against BenchmarkManagerCreate, what the protocol layer adds.
func BenchmarkRPCCreate(b *testing.B) {
	p := startRPC(b)
	p.roundTrip(b, runningReq)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tag := newTag("r")
		req := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"create","params":{"tag":%q,"argv":["/bin/true"]}}`+"\n", i+1, tag)
		if _, err := p.w.Write([]byte(req)); err != nil {
			b.Fatal(err)
		}
		for { // skip notifications (state, exited) until the reply
			line, err := p.r.ReadBytes('\n')
			if err != nil {
				b.Fatal(err)
			}
			if strings.Contains(string(line), `"id":`) {
				break
			}
		}
		b.StopTimer()
		stop := fmt.Sprintf(`{"jsonrpc":"2.0","id":"s%d","method":"stop","params":{"tag":%q}}`+"\n", i, tag)
		p.w.Write([]byte(stop))
		for {
			line, err := p.r.ReadBytes('\n')
			if err != nil {
				b.Fatal(err)
			}
			if strings.Contains(string(line), `"id":"s`) {
				break
			}
		}
		b.StartTimer()
	}
}
