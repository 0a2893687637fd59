//go:build linux

// Command switchcost measures what sharing one CPU costs a ScalarMult loop
// when two processes hand work to each other, as the service, Vault and
// the key-share plugin do when they share a core (docs/split-keys.md,
// "Where the cost goes"). It runs, each on the CPU given by -cpu (the
// processes start pinned there, so that Go's GOMAXPROCS is 1, as under
// scripts/bench-split.sh):
//
//	solo      one process multiplying
//	sliced    two processes multiplying side by side, time-sliced by the
//	          kernel
//	handoff   two processes taking turns: each makes -batch ScalarMults,
//	          writes a byte to the other over a pipe and waits for its byte
//
// and prints each process's CPU time per ScalarMult, and its ratio to
// solo. -sched batch runs the processes with SCHED_BATCH (a process woken
// does not preempt the running one), -gomaxprocs sets their GOMAXPROCS.
// Usage:
//
//	switchcost [-cpu n] [-batch 100] [-duration 3s] [-sched other|batch] [-gomaxprocs n]
//
// -cpu defaults to the first CPU this process may run on. Linux only.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gtank/ristretto255"
	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "child" {
		if err := child(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "switchcost child:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "switchcost:", err)
		os.Exit(1)
	}
}

func run(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("switchcost", flag.ContinueOnError)
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return err
	}
	first := 0
	for !allowed.IsSet(first) && first < len(allowed)*64 {
		first++
	}
	cpu := fs.Int("cpu", first, "the `CPU` every process runs on (default: the first this process may use)")
	batch := fs.Int("batch", 100, "ScalarMults between two hand-offs")
	d := fs.Duration("duration", 3*time.Second, "duration of each measurement")
	sched := fs.String("sched", "other", "scheduling `policy` of the processes: other or batch")
	procs := fs.Int("gomaxprocs", 0, "GOMAXPROCS of the processes (0: Go's, 1 when pinned)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *batch < 1 || *d <= 0 || *procs < 0 {
		return errors.New("-batch and -duration must be positive, -gomaxprocs not negative")
	}
	policy := map[string]uint32{"other": unix.SCHED_NORMAL, "batch": unix.SCHED_BATCH}
	pol, ok := policy[*sched]
	if !ok {
		return fmt.Errorf("-sched %q: other or batch", *sched)
	}
	if *cpu < 0 || !allowed.IsSet(*cpu) {
		return fmt.Errorf("-cpu %d: not a CPU this process may use", *cpu)
	}
	// Children inherit the affinity and policy of the thread that starts
	// them: a thread of its own, which ends with its goroutine, still
	// locked, so that no other goroutine runs pinned.
	errc := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("panic: %v", r)
			}
		}()
		runtime.LockOSThread()
		errc <- measureAll(w, *cpu, pol, *sched, *procs, *batch, *d)
	}()
	return <-errc
}

// measureAll pins the calling thread to cpu, gives it policy pol, and
// runs and prints the three measurements.
func measureAll(w io.Writer, cpu int, pol uint32, sched string, procs, batch int, d time.Duration) error {
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("pinning to CPU %d: %v", cpu, err)
	}
	if err := unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: pol}, 0); err != nil {
		return fmt.Errorf("scheduling policy %s: %v", sched, err)
	}
	env := os.Environ()
	if procs > 0 {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(procs))
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var solo float64
	for _, mode := range []string{"solo", "sliced", "handoff"} {
		us, err := measure(self, env, mode, batch, d)
		if err != nil {
			return fmt.Errorf("%s: %v", mode, err)
		}
		if mode == "solo" {
			solo = us[0]
		}
		for i, u := range us {
			fmt.Fprintf(w, "%-8s process %d: %6.1f µs CPU per ScalarMult, %.2f × solo\n", mode, i+1, u, u/solo)
		}
	}
	return nil
}

// measure runs mode's processes and returns their CPU time per
// ScalarMult, in µs.
func measure(self string, env []string, mode string, batch int, d time.Duration) ([]float64, error) {
	cmd := func(role string, files ...*os.File) *exec.Cmd {
		c := exec.Command(self, "child", role, strconv.Itoa(batch), d.String())
		c.Env = env
		c.ExtraFiles = files
		c.Stderr = os.Stderr
		return c
	}
	var cmds []*exec.Cmd
	var closeAfter []*os.File
	switch mode {
	case "solo":
		cmds = []*exec.Cmd{cmd("free")}
	case "sliced":
		cmds = []*exec.Cmd{cmd("free"), cmd("free")}
	case "handoff":
		// fd 3: where a process writes; fd 4: where it reads.
		ar, aw, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		br, bw, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		cmds = []*exec.Cmd{cmd("first", aw, br), cmd("second", bw, ar)}
		closeAfter = []*os.File{ar, aw, br, bw}
	}
	outs := make([]*strings.Builder, len(cmds))
	for i, c := range cmds {
		outs[i] = &strings.Builder{}
		c.Stdout = outs[i]
		if err := c.Start(); err != nil {
			return nil, err
		}
	}
	for _, f := range closeAfter {
		f.Close()
	}
	var us []float64
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			return nil, err
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(outs[i].String()), 64)
		if err != nil {
			return nil, fmt.Errorf("process %d printed %q", i+1, outs[i].String())
		}
		us = append(us, v)
	}
	return us, nil
}

// child multiplies as role says and prints its CPU time per ScalarMult in
// µs: "free" for the duration; "first" a batch, then hands off and waits,
// for the duration, then closes its end; "second" waits, a batch, hands
// off, until the first closes.
func child(args []string) error {
	if len(args) != 3 {
		return errors.New("child role batch duration")
	}
	role := args[0]
	batch, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	d, err := time.ParseDuration(args[2])
	if err != nil {
		return err
	}
	var seed [64]byte
	seed[0] = 7
	s, err := ristretto255.NewScalar().SetUniformBytes(seed[:])
	if err != nil {
		return err
	}
	p := ristretto255.NewGeneratorElement()
	multiply := func() {
		for range batch {
			p.ScalarMult(s, p)
		}
	}
	// Plain blocking system calls on the pipes, as a process blocked on a
	// socket in the kernel; Go's poller would add its own hand-offs.
	const out, in = 3, 4
	b := []byte{1}
	n := 0
	start, cpu0 := time.Now(), cpuTime()
	switch role {
	case "free":
		for time.Since(start) < d {
			multiply()
			n += batch
		}
	case "first":
		for time.Since(start) < d {
			multiply()
			n += batch
			if _, err := syscall.Write(out, b); err != nil {
				return err
			}
			if _, err := syscall.Read(in, b); err != nil {
				return err
			}
		}
		syscall.Close(out)
	case "second":
		for {
			k, err := syscall.Read(in, b)
			if err != nil {
				return err
			}
			if k == 0 {
				break
			}
			multiply()
			n += batch
			if _, err := syscall.Write(out, b); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unknown role %q", role)
	}
	if n == 0 {
		return errors.New("no ScalarMult")
	}
	fmt.Printf("%.3f\n", float64((cpuTime()-cpu0).Nanoseconds())/float64(n)/1e3)
	return nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
