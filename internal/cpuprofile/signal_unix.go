//go:build unix

package cpuprofile

import (
	"errors"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"

	"github.com/ehealth-pseudo/pseudonymizer/internal/recovered"
)

// OnSignal installs the handler of SIGUSR1 and SIGUSR2 when the
// environment variable env is set (read with getenv: os.Getenv when nil),
// and returns a function that stops it (the tests'). warn receives what
// went wrong (a message and key-value pairs, as slog's), never a secret.
func OnSignal(env string, getenv func(string) string, warn func(msg string, args ...any)) (stop func()) {
	if getenv == nil {
		getenv = os.Getenv
	}
	path := getenv(env)
	if path == "" {
		return func() {}
	}
	if !filepath.IsAbs(path) {
		warn("CPU profile not enabled: " + env + " must be an absolute path")
		return func() {}
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			// Profiling must never take the process down.
			if p := recover(); p != nil {
				warn("CPU profiling stopped after a panic", "panic_type", recovered.Describe(p).Type)
			}
		}()
		var f *os.File
		defer func() {
			if f != nil {
				pprof.StopCPUProfile()
				_ = f.Close()
			}
		}()
		for sig := range sigs {
			switch {
			case sig == syscall.SIGUSR1 && f == nil:
				out, err := create(path)
				if err != nil {
					warn("CPU profile not started", "error", err)
					continue
				}
				if err := pprof.StartCPUProfile(out); err != nil {
					_ = out.Close()
					warn("CPU profile not started", "error", err)
					continue
				}
				f = out
			case sig == syscall.SIGUSR2 && f != nil:
				pprof.StopCPUProfile()
				if err := f.Close(); err != nil {
					warn("CPU profile not written", "error", err)
				}
				f = nil
			}
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(sigs)
		<-done
	}
}

// create opens path for a new profile: not through a symbolic link, only
// a regular file with no other name (a hard link to another file, say the
// service's shares, is not truncated), emptied and made 0600.
func create(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil {
		st, ok := fi.Sys().(*syscall.Stat_t)
		switch {
		case !fi.Mode().IsRegular():
			err = errors.New("not a regular file")
		case ok && st.Nlink > 1:
			err = errors.New("the file has other names (hard links)")
		}
	}
	if err == nil {
		err = f.Truncate(0)
	}
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}
