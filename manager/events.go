package manager

// EventKind names a state change of a tool; its text is the protocol's
// `state` notification's state.
type EventKind string

// Event kinds: every state change of a tool.
const (
	EventStarted    EventKind = "started"    // a run of the main process was exec'd
	EventReady      EventKind = "ready"      // its readiness condition holds
	EventExited     EventKind = "exited"     // the main process exited, whoever caused it
	EventDaemonized EventKind = "daemonized" // a Daemon tool's launcher exited 0; Info.Pid is now the daemon
	EventRestarting EventKind = "restarting" // a restart is scheduled after a backoff
	EventFatal      EventKind = "fatal"      // it exited once more than its policy allows
	EventStopped    EventKind = "stopped"    // a stop finished: nothing of the tool remains
)

// Event is one state change. Seq increases by one per event in a session, so
// a listener can tell when it missed one.
type Event struct {
	Seq  uint64
	Kind EventKind
	Info Info
}

// emit numbers ev and hands it to Config.OnEvent. Events are numbered and
// delivered under one lock, so they reach the listener in Seq order.
func (m *Manager) emit(kind EventKind, in Info) {
	m.evMu.Lock()
	defer m.evMu.Unlock()
	m.seq++
	m.cfg.OnEvent(Event{Seq: m.seq, Kind: kind, Info: in})
}
