//go:build unix

package main

import (
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/ehealth-pseudo/pseudonymizer/internal/recovered"
)

// profileEnv names the file of the plugin's CPU profile, for benchmarks
// (scripts/bench-split.sh). Unset, the default, nothing below is installed
// and SIGUSR1 and SIGUSR2 keep their default action. Set to an absolute
// path, SIGUSR1 starts a CPU profile into that file (created or truncated,
// mode 0600) and SIGUSR2 ends it. Vault's environment reaches the plugin
// process. No listener is opened; a CPU profile holds stack samples, never
// a point or a key.
const profileEnv = "PSEUDONYMIZER_PLUGIN_CPUPROFILE"

// profileOnSignal installs the handler of SIGUSR1 and SIGUSR2 when
// profileEnv is set, and returns a function that stops it (the tests').
func profileOnSignal(logger hclog.Logger) (stop func()) {
	path := os.Getenv(profileEnv)
	if path == "" {
		return func() {}
	}
	if !filepath.IsAbs(path) {
		logger.Warn("CPU profile not enabled: " + profileEnv + " must be an absolute path")
		return func() {}
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			// Profiling must never take the plugin down.
			if p := recover(); p != nil {
				logger.Warn("CPU profiling stopped after a panic", "panic_type", recovered.Describe(p).Type)
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
				out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
				if err != nil {
					logger.Warn("CPU profile not started", "error", err)
					continue
				}
				if err := pprof.StartCPUProfile(out); err != nil {
					_ = out.Close()
					logger.Warn("CPU profile not started", "error", err)
					continue
				}
				f = out
			case sig == syscall.SIGUSR2 && f != nil:
				pprof.StopCPUProfile()
				if err := f.Close(); err != nil {
					logger.Warn("CPU profile not written", "error", err)
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
