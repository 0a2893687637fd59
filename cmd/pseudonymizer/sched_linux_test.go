package main

import (
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ehealth-pseudo/pseudonymizer/internal/cpusched"
)

// TestRunSchedBatch: with -sched-batch every thread of the process runs
// SCHED_BATCH while the service serves (run is in this test's process,
// which goes back to SCHED_OTHER after the service stops).
func TestRunSchedBatch(t *testing.T) {
	if err := cpusched.Normal(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cpusched.Normal(); err != nil {
			t.Error(err)
		}
	})
	startRun(t, []string{"-dev", "-listen", "127.0.0.1:0", "-metrics-listen", "", "-data-dir", t.TempDir(), "-sched-batch"})
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := cpusched.Policy(tid); err == nil && p != unix.SCHED_BATCH {
			t.Errorf("thread %d: policy %d, want SCHED_BATCH", tid, p)
		}
	}
}
