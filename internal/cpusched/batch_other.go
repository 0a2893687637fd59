//go:build !linux

package cpusched

import "errors"

var errLinux = errors.New("cpusched: SCHED_BATCH exists only on Linux")

// Batch is Linux's: elsewhere it fails.
func Batch() error { return errLinux }

// Normal is Linux's: elsewhere it fails.
func Normal() error { return errLinux }
