package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// serverStats is one sample of the server process.
type serverStats struct {
	rss        float64 // bytes
	cpuSeconds float64 // user + system
	gomaxprocs float64 // 0 when unknown
	goroutines float64 // 0 when unknown (-pid)
}

// sampler reads the server's resident memory and CPU time, from its
// Prometheus /metrics or from /proc/<pid>.
type sampler interface {
	sample(ctx context.Context) (serverStats, error)
}

// metricsSampler scrapes process_resident_memory_bytes,
// process_cpu_seconds_total, go_sched_gomaxprocs_threads and go_goroutines.
type metricsSampler struct {
	url    string
	client *http.Client
}

func newMetricsSampler(url string) *metricsSampler {
	return &metricsSampler{url: url, client: &http.Client{Timeout: 5 * time.Second}}
}

func (m *metricsSampler) sample(ctx context.Context) (serverStats, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.url, nil)
	if err != nil {
		return serverStats{}, err
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return serverStats{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return serverStats{}, fmt.Errorf("%s: %s", m.url, resp.Status)
	}
	return parseMetrics(io.LimitReader(resp.Body, 16<<20))
}

// parseMetrics reads the few untyped samples it needs from the Prometheus
// text format.
func parseMetrics(r io.Reader) (serverStats, error) {
	var st serverStats
	found := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		var dst *float64
		switch name {
		case "process_resident_memory_bytes":
			dst, found = &st.rss, true
		case "process_cpu_seconds_total":
			dst = &st.cpuSeconds
		case "go_sched_gomaxprocs_threads":
			dst = &st.gomaxprocs
		case "go_goroutines":
			dst = &st.goroutines
		default:
			continue
		}
		value, _, _ = strings.Cut(strings.TrimSpace(value), " ") // drop a timestamp
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return st, fmt.Errorf("metrics: %s: %v", name, err)
		}
		*dst = v
	}
	if err := sc.Err(); err != nil {
		return st, err
	}
	if !found {
		return st, errors.New("metrics: no process_resident_memory_bytes")
	}
	return st, nil
}

// procSampler reads /proc/<pid>/status (VmRSS) and /proc/<pid>/stat (utime
// and stime, in clock ticks of 1/100 s as on every Linux platform Go
// supports).
type procSampler struct{ pid int }

const clockTicks = 100

func (p procSampler) sample(context.Context) (serverStats, error) {
	var st serverStats
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		return st, err
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				return st, fmt.Errorf("/proc/%d/status: VmRSS: %v", p.pid, err)
			}
			st.rss = kb * 1024
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		return st, err
	}
	// The command name, field 2, may hold spaces: count from after it.
	i := strings.LastIndexByte(string(stat), ')')
	f := strings.Fields(string(stat[i+1:]))
	if i < 0 || len(f) < 13 {
		return st, fmt.Errorf("/proc/%d/stat: unexpected format", p.pid)
	}
	utime, err1 := strconv.ParseFloat(f[11], 64) // field 14
	stime, err2 := strconv.ParseFloat(f[12], 64) // field 15
	if err1 != nil || err2 != nil {
		return st, fmt.Errorf("/proc/%d/stat: unexpected format", p.pid)
	}
	st.cpuSeconds = (utime + stime) / clockTicks
	return st, nil
}

// watch samples s every interval until stop is closed and returns the
// peak RSS; with record, it also keeps every sample.
type watch struct {
	mu      sync.Mutex
	peak    float64
	last    serverStats
	err     error
	errs    int
	stop    chan struct{}
	done    chan struct{}
	valid   bool
	record  bool
	samples []timedStats
}

// timedStats is a sample and when it was taken.
type timedStats struct {
	at time.Time
	serverStats
}

func startWatch(ctx context.Context, s sampler, interval time.Duration, record bool) *watch {
	w := &watch{stop: make(chan struct{}), done: make(chan struct{}), record: record}
	if s == nil {
		close(w.done)
		return w
	}
	go func() {
		defer close(w.done)
		defer func() {
			if p := recover(); p != nil {
				w.mu.Lock()
				w.err = fmt.Errorf("sampler panicked: %T", p)
				w.errs++
				w.mu.Unlock()
			}
		}()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			st, err := s.sample(ctx)
			at := time.Now()
			w.mu.Lock()
			if err != nil {
				w.err = err
				w.errs++
			} else {
				w.valid = true
				w.last = st
				w.peak = max(w.peak, st.rss)
				if w.record {
					w.samples = append(w.samples, timedStats{at, st})
				}
			}
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// end stops the sampling and returns the peak RSS seen.
func (w *watch) end() (peak float64, err error) {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.valid {
		return 0, w.err
	}
	return w.peak, nil
}

// series returns the recorded samples and the number of failed ones; call
// it after end.
func (w *watch) series() ([]timedStats, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.samples, w.errs
}
