package cpusched

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// childEnv marks the test process that TestBatchRefusesOtherPolicies
// starts.
const childEnv = "CPUSCHED_TEST_CHILD"

// policies returns the policy and nice value of every thread of the
// process, skipping threads that end meanwhile.
func policies(t *testing.T) map[int]*unix.SchedAttr {
	t.Helper()
	tids, err := threads()
	if err != nil {
		t.Fatal(err)
	}
	m := map[int]*unix.SchedAttr{}
	for _, tid := range tids {
		attr, err := unix.SchedGetAttr(tid, 0)
		if errors.Is(err, unix.ESRCH) {
			continue
		}
		if err != nil {
			t.Fatalf("thread %d: %v", tid, err)
		}
		m[tid] = attr
	}
	return m
}

func checkAll(t *testing.T, policy uint32, nice int32) {
	t.Helper()
	for tid, attr := range policies(t) {
		if attr.Policy != policy || attr.Nice != nice {
			t.Errorf("thread %d: %s nice %d, want %s nice %d", tid, policyName(attr.Policy), attr.Nice, policyName(policy), nice)
		}
	}
}

// TestBatch: from SCHED_OTHER everywhere (Normal first, in case the test
// runs under chrt -b), Batch makes every thread SCHED_BATCH with its nice
// value kept, threads started later too; Normal undoes it.
func TestBatch(t *testing.T) {
	if err := Normal(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := Normal(); err != nil {
			t.Error(err)
		}
	}()
	nice := policies(t)[unix.Gettid()].Nice
	checkAll(t, unix.SCHED_NORMAL, nice)
	if err := Batch(); err != nil {
		t.Fatal(err)
	}
	if err := Batch(); err != nil { // again: nothing to do
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
	if got := len(policies(t)); got < n {
		t.Fatalf("%d threads, want at least %d", got, n)
	}
	checkAll(t, unix.SCHED_BATCH, nice)
	release.Done()
	if p, err := Policy(0); err != nil || p != unix.SCHED_BATCH {
		t.Errorf("Policy: %s, %v", policyName(p), err)
	}
	if err := Normal(); err != nil {
		t.Fatal(err)
	}
	checkAll(t, unix.SCHED_NORMAL, nice)
}

// TestBatchRefusesOtherPolicies: a thread under SCHED_IDLE is not raised
// to SCHED_BATCH: Batch names it in an error and leaves every other
// thread as it was. It runs in a process of its own: the thread made
// SCHED_IDLE may be the main thread, which outlives its goroutine and
// may not be allowed back.
func TestBatchRefusesOtherPolicies(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBatchRefusesOtherPolicies$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), childEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		if !strings.Contains(string(out), "--- PASS: TestBatchRefusesOtherPolicies") {
			t.Fatalf("the test did not run in its process:\n%s", out)
		}
		return
	}
	idle := make(chan int)
	release := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		attr, err := unix.SchedGetAttr(0, 0)
		if err == nil {
			attr.Size, attr.Policy, attr.Flags = unix.SizeofSchedAttr, unix.SCHED_IDLE, 0
			err = unix.SchedSetAttr(0, attr, 0)
		}
		if err != nil {
			idle <- -1
			return
		}
		idle <- unix.Gettid()
		<-release
	}()
	tid := <-idle
	if tid < 0 {
		t.Fatal("could not make a thread SCHED_IDLE")
	}
	defer func() { close(release); <-done }()
	nice := policies(t)[unix.Gettid()].Nice
	err := Batch()
	if err == nil || !strings.Contains(err.Error(), "SCHED_IDLE") {
		t.Errorf("Batch with thread %d SCHED_IDLE: %v, want an error naming SCHED_IDLE", tid, err)
	}
	for other, attr := range policies(t) {
		if other != tid && (attr.Policy != unix.SCHED_NORMAL || attr.Nice != nice) {
			t.Errorf("thread %d: %s nice %d after the refusal, want SCHED_OTHER nice %d", other, policyName(attr.Policy), attr.Nice, nice)
		}
	}
}
