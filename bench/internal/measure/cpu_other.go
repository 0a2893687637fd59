//go:build !unix

package measure

import "time"

// cpuMeasured says whether ProcessCPU measures anything on this platform.
const cpuMeasured = false

// ProcessCPU is not measured on this platform.
func ProcessCPU() time.Duration { return 0 }
