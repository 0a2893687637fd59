// Package recovered describes recovered panics without their values: a
// panic value may hold request data (a point, a transitInfo), so only its
// type and the functions and lines of the panicking goroutine are reported.
package recovered

import (
	"fmt"
	"runtime"
)

// Panic is a recovered panic, safe to log.
type Panic struct {
	// Type is the dynamic type of the panic value, e.g. "runtime.boundsError".
	Type string
	// Frames are "function:line" of the panicking goroutine, innermost
	// first, without argument values.
	Frames []string
}

// Describe returns a Panic for the value p that recover returned. Call it
// in the deferred function that recovered, so that the frames are those of
// the panic.
func Describe(p any) *Panic {
	pcs := make([]uintptr, 32)
	n := runtime.Callers(3, pcs)
	fs := runtime.CallersFrames(pcs[:n])
	var out []string
	for {
		f, more := fs.Next()
		out = append(out, fmt.Sprintf("%s:%d", f.Function, f.Line))
		if !more {
			break
		}
	}
	return &Panic{Type: fmt.Sprintf("%T", p), Frames: out}
}
