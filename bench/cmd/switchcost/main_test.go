//go:build linux

package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the child processes, as the
// command's own binary does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "child" {
		if err := child(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestRun runs every measurement briefly: five lines, each process's CPU
// per ScalarMult positive and solo's ratio 1.
func TestRun(t *testing.T) {
	for _, sched := range []string{"other", "batch"} {
		var out strings.Builder
		if err := run([]string{"-duration", (100 * time.Millisecond).String(), "-batch", "5", "-sched", sched}, &out); err != nil {
			t.Fatalf("-sched %s: %v", sched, err)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 5 {
			t.Fatalf("-sched %s: %d lines:\n%s", sched, len(lines), out.String())
		}
		for i, l := range lines {
			var mode string
			var n int
			var us, ratio float64
			if _, err := fmt.Sscanf(l, "%s process %d: %f µs CPU per ScalarMult, %f × solo", &mode, &n, &us, &ratio); err != nil || us <= 0 || ratio <= 0 {
				t.Fatalf("-sched %s: line %q: %v", sched, l, err)
			}
			if i == 0 && (mode != "solo" || ratio != 1) {
				t.Fatalf("-sched %s: first line %q", sched, l)
			}
		}
	}
}

func TestRunRefuses(t *testing.T) {
	for _, args := range [][]string{{"-batch", "0"}, {"-duration", "0s"}, {"-sched", "fifo"}, {"-gomaxprocs", "-1"}, {"-cpu", "-1"}, {"-cpu", "100000"}} {
		if err := run(args, &strings.Builder{}); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}
