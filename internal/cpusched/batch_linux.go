package cpusched

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Batch gives every thread of the process the SCHED_BATCH policy, keeping
// its nice value; threads created afterwards inherit it from the thread
// that creates them. A thread that ends meanwhile is skipped.
func Batch() error {
	done := map[int]bool{}
	// Threads may start while the list is read: read it again until a
	// pass finds none that is not done.
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
			switch err := setBatch(tid); {
			case errors.Is(err, unix.ESRCH): // it ended
			case err != nil:
				return fmt.Errorf("cpusched: thread %d: %w", tid, err)
			}
			done[tid] = true
		}
		if !fresh {
			return nil
		}
	}
	return errors.New("cpusched: threads kept starting")
}

func setBatch(tid int) error {
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return err
	}
	attr.Size = unix.SizeofSchedAttr
	attr.Policy = unix.SCHED_BATCH
	attr.Priority = 0
	attr.Flags = 0
	return unix.SchedSetAttr(tid, attr, 0)
}

// Policy is the scheduling policy of thread tid (0: the calling thread),
// unix.SCHED_NORMAL, unix.SCHED_BATCH, ….
func Policy(tid int) (uint32, error) {
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return 0, err
	}
	return attr.Policy, nil
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
