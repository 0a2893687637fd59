//go:build unix

package compare

import (
	"syscall"
	"time"
)

// processCPU returns the user and system CPU time of this process, 0 if
// unknown.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
