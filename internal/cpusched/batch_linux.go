package cpusched

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Batch moves every thread of the process from SCHED_OTHER (SCHED_NORMAL)
// to SCHED_BATCH, keeping its nice value and reset-on-fork flag; threads
// created afterwards inherit it from the thread that creates them. A
// thread already SCHED_BATCH is left alone; one under any other policy
// (SCHED_IDLE, a real-time one) is an error, as Batch would lower or raise
// it, and Batch then moves back the threads it moved. A thread that ends
// meanwhile is skipped. One whose creation is under
// way during the call may keep its creator's former policy; the service
// calls Batch as it starts, before it serves.
func Batch() error { return switchAll(unix.SCHED_NORMAL, unix.SCHED_BATCH) }

// Normal moves every thread back from SCHED_BATCH to SCHED_OTHER, with
// the rules of Batch reversed.
func Normal() error { return switchAll(unix.SCHED_BATCH, unix.SCHED_NORMAL) }

// Policy is the scheduling policy of thread tid (0: the calling thread),
// unix.SCHED_NORMAL, unix.SCHED_BATCH, ….
func Policy(tid int) (uint32, error) {
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return 0, err
	}
	return attr.Policy, nil
}

var policyNames = map[uint32]string{
	unix.SCHED_NORMAL: "SCHED_OTHER", unix.SCHED_FIFO: "SCHED_FIFO", unix.SCHED_RR: "SCHED_RR",
	unix.SCHED_BATCH: "SCHED_BATCH", unix.SCHED_IDLE: "SCHED_IDLE", unix.SCHED_DEADLINE: "SCHED_DEADLINE",
}

func policyName(p uint32) string {
	if n, ok := policyNames[p]; ok {
		return n
	}
	return "policy " + strconv.FormatUint(uint64(p), 10)
}

// switchAll moves every thread under policy from to policy to; on an
// error it moves back those it moved.
func switchAll(from, to uint32) (err error) {
	done := map[int]bool{}
	var moved []int
	defer func() {
		if err != nil {
			for _, tid := range moved {
				_, _ = switchThread(tid, to, from)
			}
		}
	}()
	// Threads may start while the list is read: read it again until two
	// passes in a row find none that is not done.
	clean := 0
	for range 100 {
		tids, err := threads()
		if err != nil {
			return err
		}
		fresh := false
		for _, tid := range tids {
			if done[tid] {
				continue
			}
			fresh = true
			switch was, err := switchThread(tid, from, to); {
			case errors.Is(err, unix.ESRCH): // it ended
			case err != nil:
				return fmt.Errorf("cpusched: thread %d: %w", tid, err)
			case was == from:
				moved = append(moved, tid)
			}
			done[tid] = true
		}
		if fresh {
			clean = 0
		} else if clean++; clean == 2 {
			return nil
		}
	}
	return errors.New("cpusched: threads kept starting")
}

// switchThread moves thread tid from policy from to policy to and returns
// the policy it had.
func switchThread(tid int, from, to uint32) (uint32, error) {
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return 0, err
	}
	switch attr.Policy {
	case to:
		return to, nil
	case from:
	default:
		return attr.Policy, fmt.Errorf("runs %s, not %s: left as it is", policyName(attr.Policy), policyName(from))
	}
	attr.Size = unix.SizeofSchedAttr
	attr.Policy = to
	attr.Priority = 0
	attr.Flags &= unix.SCHED_FLAG_RESET_ON_FORK
	return from, unix.SchedSetAttr(tid, attr, 0)
}

// threads lists the process's thread IDs.
func threads() ([]int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("cpusched: %w", err)
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}
