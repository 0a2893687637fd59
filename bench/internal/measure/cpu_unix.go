//go:build unix

package measure

import (
	"syscall"
	"time"
)

// cpuMeasured says whether ProcessCPU measures anything on this platform.
const cpuMeasured = true

// ProcessCPU returns the user and system CPU time of this process, 0 if
// unknown.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
