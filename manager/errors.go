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
)
