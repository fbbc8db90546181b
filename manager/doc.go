// Package manager owns the life cycle of the tools a session starts: it spawns
// each tool as the leader of its own process group, reaps every exit through a
// single monitor, stops whole trees (escaped descendants included) and tears
// everything down when the session ends.
//
// It knows nothing of JSON or of the transport that drives it; package rpc maps
// the wire protocol onto it.
//
// Guarantees, and how they are kept:
//   - A tool never outlives a SIGKILLed sidecar: it carries a parent-death
//     signal (SIGKILL) bound to a spawner thread that never exits.
//   - A stop returns only when no member of the tool remains: its process group,
//     the processes that carry its PROCMGR_TAG/PROCMGR_SESSION environment (those
//     that left the group with setsid or a double fork), and its cgroup where one
//     is in use.
//   - One reaper (monitor) collects every exit status; no other code waits, so no
//     status is stolen and no pid is signalled after it was reaped.
package manager
