package manager

import "errors"

// Sentinel errors. Callers test with errors.Is; the wrapped message carries
// the detail (the tag, the OS reason).
var (
	// ErrTagInUse: create named a tag that is not yet released.
	ErrTagInUse = errors.New("tag in use")
	// ErrNoSuchTag: the tag was never created or has been released by stop.
	ErrNoSuchTag = errors.New("no such tag")
	// ErrSpawn: the tool could not be started; the tag stays free.
	ErrSpawn = errors.New("spawn failed")
	// ErrShuttingDown: the manager is stopping every tool and takes no new work.
	ErrShuttingDown = errors.New("shutting down")
	// ErrNotReady: the tool did not become ready in time, or exited first; it
	// was stopped and its tag is free.
	ErrNotReady = errors.New("not ready")
	// ErrInvalid: a request is malformed (bad tag, empty argv, unknown signal).
	ErrInvalid = errors.New("invalid argument")
	// ErrReservationDone: Create of a Reservation already used or released.
	ErrReservationDone = errors.New("reservation already used or released")

	// The errors below come wrapped together with one of the above, so
	// that a caller can tell the cases apart without reading the message.

	// ErrExecNotFound (with ErrSpawn): argv[0] names no executable file,
	// in the tool's PATH or at the path given.
	ErrExecNotFound = errors.New("executable not found")
	// ErrNotCaptured (with ErrInvalid): a read of a stream that is not captured.
	ErrNotCaptured = errors.New("stream not captured")
	// ErrStdinClosed (with ErrInvalid): a write to a stdin pipe that was
	// closed with eof.
	ErrStdinClosed = errors.New("stdin was closed")
	// ErrStdinNotPiped (with ErrInvalid): a write to the stdin of a tool
	// created with stdin "null".
	ErrStdinNotPiped = errors.New("stdin is not a pipe")
)
