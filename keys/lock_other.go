//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package keys

// lockFile does nothing on this system: writers of other processes are not
// serialized (those of this process are).
func lockFile(string) (func(), error) { return func() {}, nil }
