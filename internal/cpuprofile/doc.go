// Package cpuprofile takes CPU profiles of a running process on signals,
// for benchmarks (scripts/bench-split.sh): the service and the key-share
// plugin use it, each with an environment variable of its own.
//
// With the variable unset, the default, nothing is installed and SIGUSR1
// and SIGUSR2 keep their default action. Set to an absolute path, SIGUSR1
// starts a CPU profile into that file (created or truncated, mode 0600)
// and SIGUSR2 ends it. No listener is opened; a CPU profile holds stack
// samples, never a point or a key.
package cpuprofile
