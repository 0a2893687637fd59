package cpusched

import (
	"runtime"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// TestBatch: after Batch, every thread of the process is SCHED_BATCH with
// its nice value kept, those that start later too.
func TestBatch(t *testing.T) {
	before, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := Batch(); err != nil {
		t.Fatal(err)
	}
	// New threads: goroutines locked to threads of their own, all at once.
	const n = 8
	var started, release sync.WaitGroup
	started.Add(n)
	release.Add(1)
	for range n {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			started.Done()
			release.Wait()
		}()
	}
	started.Wait()
	defer release.Done()
	tids, err := threads()
	if err != nil {
		t.Fatal(err)
	}
	if len(tids) < n {
		t.Fatalf("%d threads, want at least %d", len(tids), n)
	}
	for _, tid := range tids {
		attr, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			t.Fatalf("thread %d: %v", tid, err)
		}
		if attr.Policy != unix.SCHED_BATCH || attr.Nice != before.Nice {
			t.Errorf("thread %d: policy %d nice %d, want SCHED_BATCH (%d), nice %d", tid, attr.Policy, attr.Nice, unix.SCHED_BATCH, before.Nice)
		}
	}
	if p, err := Policy(0); err != nil || p != unix.SCHED_BATCH {
		t.Errorf("Policy: %d, %v", p, err)
	}
}
