//go:build !unix

package cpuprofile

// OnSignal does nothing where there are no SIGUSR1 and SIGUSR2.
func OnSignal(string, func(string) string, func(string, ...any)) (stop func()) { return func() {} }
