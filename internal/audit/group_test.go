package audit

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/waitfor"
)

// gatedWriter records each Write; while gate is not nil, Write waits for
// it to be closed.
type gatedWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	gate   chan struct{}
	fail   error
	panics bool
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	gate := w.gate
	w.mu.Unlock()
	if gate != nil {
		<-gate
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	if w.panics {
		panic("writer panics")
	}
	if w.fail != nil {
		return 0, w.fail
	}
	return w.buf.Write(p)
}

// TestGroupWriterBatches: records written while a batch is being written
// go out together in the next single Write, and each writer's Sync
// returns only once its record is out.
func TestGroupWriterBatches(t *testing.T) {
	w := &gatedWriter{gate: make(chan struct{})}
	g := NewGroupWriter(w)
	defer g.Close()
	// The first record's batch blocks in the underlying writer.
	if _, err := g.Write([]byte("first\n")); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 10*time.Second, "the first batch taken", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.pending) == 0
	})
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			line := fmt.Sprintf("record %d\n", i)
			if _, err := g.Write([]byte(line)); err != nil {
				errs <- err
				return
			}
			if err := g.Sync(); err != nil {
				errs <- err
				return
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			if !strings.Contains(w.buf.String(), line) {
				errs <- fmt.Errorf("Sync returned before %q was written", line)
			}
		})
	}
	waitfor.Cond(t, 10*time.Second, "all records pending", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.written == uint64(len("first\n"))+uint64(n*len("record 0\n"))+10 // records 10–19 are one byte longer
	})
	w.mu.Lock()
	gate := w.gate
	w.gate = nil
	w.mu.Unlock()
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if w.writes != 2 {
		t.Fatalf("%d writes for 1 + %d records written in two batches", w.writes, n)
	}
}

// TestGroupWriterFaults: an error or a panic of the underlying writer is
// returned by Sync, and later records are written.
func TestGroupWriterFaults(t *testing.T) {
	w := &gatedWriter{fail: errors.New("disk full")}
	g := NewGroupWriter(w)
	defer g.Close()
	_, _ = g.Write([]byte("a\n"))
	if err := g.Sync(); err == nil || err.Error() != "disk full" {
		t.Fatalf("Sync after a failed write: %v", err)
	}
	w.mu.Lock()
	w.fail, w.panics = nil, true
	w.mu.Unlock()
	_, _ = g.Write([]byte("b\n"))
	if err := g.Sync(); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("Sync after a panicking write: %v", err)
	}
	w.mu.Lock()
	w.panics = false
	w.mu.Unlock()
	_, _ = g.Write([]byte("c\n"))
	if err := g.Sync(); err != nil || !strings.Contains(w.buf.String(), "c\n") {
		t.Fatalf("Sync after recovery: %v, %q", err, w.buf.String())
	}
}

// TestGroupWriterClose: Close writes what is pending; writes after it
// fail and Sync does not wait.
func TestGroupWriterClose(t *testing.T) {
	w := &gatedWriter{}
	g := NewGroupWriter(w)
	for i := range 100 {
		_, _ = fmt.Fprintf(g, "line %d\n", i)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(w.buf.String(), "\n"); got != 100 {
		t.Fatalf("%d lines written before Close returned", got)
	}
	if _, err := g.Write([]byte("late\n")); err == nil {
		t.Fatal("Write after Close succeeded")
	}
	if err := g.Sync(); err != nil {
		t.Fatalf("Sync after Close: %v", err)
	}
}
