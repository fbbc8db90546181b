package manager

// Event kinds: every state change of a tool.
const (
	EventStarted    = "started"    // a run of the main process was exec'd
	EventReady      = "ready"      // its readiness condition holds
	EventExited     = "exited"     // the main process exited, whoever caused it
	EventDaemonized = "daemonized" // a Daemon tool's launcher exited 0; Info.Pid is now the daemon
	EventRestarting = "restarting" // a restart is scheduled after a backoff
	EventFatal      = "fatal"      // it exited once more than its policy allows
	EventStopped    = "stopped"    // a stop finished: nothing of the tool remains
)

// Event is one state change. Seq increases by one per event in a session, so
// a listener can tell when it missed one.
type Event struct {
	Seq  uint64
	Kind string
	Info Info
}

// emit numbers ev and hands it to Config.OnEvent. Events are numbered and
// delivered under one lock, so they reach the listener in Seq order.
func (m *Manager) emit(kind string, in Info) {
	m.evMu.Lock()
	defer m.evMu.Unlock()
	m.seq++
	m.cfg.OnEvent(Event{Seq: m.seq, Kind: kind, Info: in})
}
