package vault_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gtank/ristretto255"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/keyshare"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonymizer"
)

// cpuTicks returns the user + system CPU time of process pid (clock ticks
// of 10 ms), from /proc.
func cpuTicks(t *testing.T, pid string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// pluginPID finds the running plugin process started from dir.
func pluginPID(t *testing.T, dir string) string {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		exe, err := os.Readlink("/proc/" + e.Name() + "/exe")
		if err == nil && filepath.Dir(exe) == dir && filepath.Base(exe) == keyshare.Name {
			return e.Name()
		}
	}
	t.Fatal("no plugin process")
	return ""
}

// TestSplitPerformance measures, with Vault and the plugin on this machine
// (set PSEUDO_SPLIT_BENCH=1; it takes about a minute): the CPU time per
// item of the service's evaluation plus the plugin, against one
// ScalarMult; the throughput of batches of 100 from GOMAXPROCS callers
// against cores ÷ (2 ScalarMult); and the p50 latency one item gains from
// the plugin hop at low load. It logs the numbers.
func TestSplitPerformance(t *testing.T) {
	if os.Getenv("PSEUDO_SPLIT_BENCH") == "" {
		t.Skip("set PSEUDO_SPLIT_BENCH=1 to measure")
	}
	// One ScalarMult.
	s, _ := point.RandomScalar(nil)
	P := ristretto255.NewIdentityElement().ScalarBaseMult(s)
	var Q ristretto255.Element
	const n = 2000
	start := time.Now()
	for range n {
		Q.ScalarMult(s, P)
	}
	sm := time.Since(start) / n
	t.Logf("ScalarMult: %v", sm)

	e := newSplitEnv(t, false)
	e.create(t, "single_v1", false)
	e.create(t, "split_v1", true)
	single, split := e.domain(t, "single_v1"), e.domain(t, "split_v1")
	pid := pluginPID(t, e.PluginDir())
	self := strconv.Itoa(os.Getpid())
	batch := func(size int) [][]byte {
		b := make([][]byte, size)
		for i := range b {
			b[i], _, _ = client.Blind(niss(t, i))
		}
		return b
	}
	params := &pseudonymizer.Params{Now: time.Now(), Context: context.Background()}

	// Throughput and CPU: GOMAXPROCS callers, batches of 100.
	in := batch(100)
	run := func(d *pseudonymizer.Domain, dur time.Duration) (items int64, selfTicks, plugTicks int64) {
		var count atomic.Int64
		var wg sync.WaitGroup
		stop := make(chan struct{})
		s0, p0 := cpuTicks(t, self), cpuTicks(t, pid)
		for range runtime.GOMAXPROCS(0) {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					_, errs := d.PseudonymizeBatch(in, params)
					for _, err := range errs {
						if err != nil {
							t.Error(err)
							return
						}
					}
					count.Add(int64(len(in)))
				}
			})
		}
		time.Sleep(dur) // the measurement's duration
		close(stop)
		wg.Wait()
		return count.Load(), cpuTicks(t, self) - s0, cpuTicks(t, pid) - p0
	}
	run(split, time.Second) // warm up
	const dur = 10 * time.Second
	items, st, pt := run(split, dur)
	cores := runtime.NumCPU()
	perItem := time.Duration((st + pt) * int64(10*time.Millisecond) / items)
	rate := float64(items) / dur.Seconds()
	ideal := float64(cores) / (2 * sm.Seconds())
	t.Logf("split, batches of 100, %d callers: %.0f items/s; ideal cores÷(2 ScalarMult) = %.0f/s: ratio %.2f (want ≥ 0.65)",
		runtime.GOMAXPROCS(0), rate, ideal, rate/ideal)
	t.Logf("split: CPU per item, service %v + plugin %v = %v = %.2f ScalarMult (want ≤ 2.4)",
		time.Duration(st*int64(10*time.Millisecond)/items), time.Duration(pt*int64(10*time.Millisecond)/items), perItem, float64(perItem)/float64(sm))
	if sh, err := e.service.Shares(); err == nil {
		r, it, f := sh.Stats()
		t.Logf("plugin round trips %d, points %d (%.0f per round trip), failed %d", r, it, float64(it)/float64(max(r, 1)), f)
	}
	sItems, sSelf, _ := run(single, dur)
	t.Logf("single, batches of 100: %.0f items/s, CPU per item %v = %.2f ScalarMult",
		float64(sItems)/dur.Seconds(), time.Duration(sSelf*int64(10*time.Millisecond)/sItems), float64(sSelf*int64(10*time.Millisecond)/sItems)/float64(sm))

	// Latency of one item at low load (one caller, one at a time).
	one := batch(1)
	lat := func(d *pseudonymizer.Domain) time.Duration {
		var ds []time.Duration
		for range 300 {
			t0 := time.Now()
			_, errs := d.PseudonymizeBatch(one, params)
			ds = append(ds, time.Since(t0))
			if errs[0] != nil {
				t.Fatal(errs[0])
			}
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	lat(split)
	ls, l1 := lat(split), lat(single)
	t.Logf("p50 of one item: split %v, single %v: the plugin hop adds %v (want ≤ 1.5 ms)", ls, l1, ls-l1)
}
