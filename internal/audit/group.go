package audit

import (
	"errors"
	"io"
	"sync"

	"github.com/ehealth-pseudo/pseudonymizer/internal/recovered"
)

// GroupWriter writes the log records of concurrent calls to the
// underlying writer together: group commit. Write only appends the record
// to the pending batch; one goroutine writes each batch with a single
// Write of the underlying writer; Sync waits until everything written
// before it has been written through. A call that writes its audit record,
// then Syncs, is answered only once its record is out, yet N concurrent
// calls cost one write system call instead of N.
//
// Pending bytes are bounded (maxPending): a Write that would exceed them
// waits for the batch in flight. If the underlying writer fails, Sync
// returns its error (the records of that batch are lost, as they would
// have been with a direct write) and later batches are still attempted.
type GroupWriter struct {
	w io.Writer

	mu      sync.Mutex
	cond    *sync.Cond
	pending []byte
	spare   []byte
	written uint64 // bytes appended so far
	flushed uint64 // bytes written through (or failed) so far
	err     error  // the error of the last failed batch, until the next success
	closed  bool   // Close was called: no more writes
	stopped bool   // the writer goroutine has written everything and exited
	done    chan struct{}
}

// maxPending bounds the bytes waiting for the writer goroutine.
const maxPending = 1 << 20

// errClosed is the error of writes after Close.
var errClosed = errors.New("audit: group writer closed")

// NewGroupWriter starts a GroupWriter on w. Close stops it.
func NewGroupWriter(w io.Writer) *GroupWriter {
	g := &GroupWriter{w: w, done: make(chan struct{})}
	g.cond = sync.NewCond(&g.mu)
	go g.run()
	return g
}

// Write appends p to the pending batch. It does not wait for the
// underlying writer unless maxPending bytes are already waiting.
func (g *GroupWriter) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for !g.closed && len(g.pending) > 0 && len(g.pending)+len(p) > maxPending {
		g.cond.Wait()
	}
	if g.closed {
		return 0, errClosed
	}
	g.pending = append(g.pending, p...)
	g.written += uint64(len(p))
	g.cond.Broadcast()
	return len(p), nil
}

// Sync waits until every byte written before the call has been written
// through to the underlying writer, and returns the error of the last
// batch that failed since, if any.
func (g *GroupWriter) Sync() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	target := g.written
	for g.flushed < target && !g.stopped {
		g.cond.Wait()
	}
	if g.flushed < target {
		return errClosed
	}
	return g.err
}

// Close writes what is pending and stops the writer goroutine.
func (g *GroupWriter) Close() error {
	g.mu.Lock()
	if !g.closed {
		g.closed = true
		g.cond.Broadcast()
	}
	g.mu.Unlock()
	<-g.done
	return nil
}

// run writes the pending batches, one Write each, until Close; then the
// last one. A panic of the underlying writer is recovered: the batch is
// counted as failed, and the goroutine goes on.
func (g *GroupWriter) run() {
	defer close(g.done)
	defer func() {
		// Nothing here panics but the writer (recovered in write); should
		// it all the same, writes fail from now on instead of waiting
		// forever.
		if p := recover(); p != nil {
			g.mu.Lock()
			g.closed, g.stopped = true, true
			g.err = errors.New("audit: the group writer stopped: " + recovered.Describe(p).Type)
			g.cond.Broadcast()
			g.mu.Unlock()
		}
	}()
	for {
		g.mu.Lock()
		for len(g.pending) == 0 && !g.closed {
			g.cond.Wait()
		}
		if len(g.pending) == 0 && g.closed {
			g.stopped = true
			g.cond.Broadcast()
			g.mu.Unlock()
			return
		}
		batch := g.pending
		g.pending, g.spare = g.spare[:0], nil
		upTo := g.written
		g.mu.Unlock()

		err := g.write(batch)

		g.mu.Lock()
		g.flushed = upTo
		g.err = err
		if cap(batch) <= maxPending {
			g.spare = batch[:0]
		}
		g.cond.Broadcast()
		g.mu.Unlock()
	}
}

func (g *GroupWriter) write(batch []byte) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = errors.New("audit: the log writer panicked: " + recovered.Describe(p).Type)
		}
	}()
	_, err = g.w.Write(batch)
	return err
}
