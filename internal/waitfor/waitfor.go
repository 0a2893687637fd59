// Package waitfor lets tests wait for an event they cannot be told about
// directly (a poll of a key store, a health change, a process starting),
// by checking a condition until it holds or a deadline passes. Tests use
// it instead of sleeping for a fixed time: a fast machine does not wait
// longer than needed, a slow one does not fail early, and a deadline that
// passes fails the test with what was awaited.
package waitfor

import (
	"testing"
	"time"
)

// Interval is how often a condition is checked.
const Interval = 10 * time.Millisecond

// Cond checks cond every Interval until it returns true, and fails the test
// (t.Fatalf, naming what) if it still returns false after timeout.
func Cond(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	State(t, timeout, what, func() (bool, string) { return cond(), "" })
}

// State is Cond for a condition that also says what it saw, for the
// failure message.
func State(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			if state != "" {
				t.Fatalf("waited %v for %s; last: %s", timeout, what, state)
			}
			t.Fatalf("waited %v for %s", timeout, what)
		}
		<-tick.C
	}
}
