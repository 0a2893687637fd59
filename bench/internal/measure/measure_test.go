package measure

import (
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}, {[]float64{5, 1, 3}, 3}} {
		if got := Median(c.xs); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.xs, got, c.want)
		}
	}
	xs := []float64{2, 1}
	Median(xs)
	if xs[0] != 2 {
		t.Error("Median sorted its argument")
	}
}

func TestProcessCPU(t *testing.T) {
	start := ProcessCPU()
	if !cpuMeasured {
		if start != 0 {
			t.Fatalf("ProcessCPU = %v on a platform where it measures nothing", start)
		}
		return
	}
	if start == 0 {
		t.Fatal("no process CPU time on a unix platform")
	}
	for deadline := time.Now().Add(50 * time.Millisecond); time.Now().Before(deadline); {
	}
	if used := ProcessCPU() - start; used <= 0 {
		t.Errorf("50 ms of work used %v of CPU time", used)
	}
}
