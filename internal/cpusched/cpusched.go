// Package cpusched gives the whole process a Linux scheduling policy.
//
// The service uses it for SCHED_BATCH (flag -sched-batch): when the
// service, Vault and the key-share plugin share cores, a process woken by
// another (a write on a socket) then waits for the running one to block or
// use up its time slice instead of preempting it at once, and the Go
// runtime of a process preempted inside a system call no longer hands its
// processor around (docs/split-keys.md, "Where the cost goes").
package cpusched
