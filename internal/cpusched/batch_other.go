//go:build !linux

package cpusched

import "errors"

// Batch is Linux's: elsewhere it fails.
func Batch() error { return errors.New("cpusched: SCHED_BATCH exists only on Linux") }
