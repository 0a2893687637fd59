package grpcserver_test

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/internal/audit"
	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/internal/grpcserver"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// heldWriter holds every Write until released, and says when one arrives
// and when it is written.
type heldWriter struct {
	mu      sync.Mutex
	buf     strings.Builder
	arrived chan struct{}
	release chan struct{}
	wrote   chan struct{}
}

func (w *heldWriter) Write(p []byte) (int, error) {
	select {
	case w.arrived <- struct{}{}:
	default:
	}
	<-w.release
	w.mu.Lock()
	n, err := w.buf.Write(p)
	w.mu.Unlock()
	select {
	case w.wrote <- struct{}{}:
	default:
	}
	return n, err
}

// TestAuditGroupCommit: with an audit.GroupWriter under the log and its
// Sync as Config.AuditSync, a call is answered only once its audit record
// has been written.
func TestAuditGroupCommit(t *testing.T) {
	w := &heldWriter{arrived: make(chan struct{}, 1), release: make(chan struct{}), wrote: make(chan struct{}, 1)}
	gw := audit.NewGroupWriter(w)
	defer gw.Close()
	_, conn := bufconnServer(t, grpcserver.Config{
		Keys: newKeys(t, time.Hour).cache, Auth: auth.New(auth.Config{Dev: true}),
		Logger: slog.New(slog.NewJSONHandler(gw, nil)), AuditSync: gw.Sync,
	})
	done := make(chan error, 1)
	go func() {
		_, err := pb.NewPseudonymizerClient(conn).GetDomain(devCtx(t, cnPharmacy), &pb.GetDomainRequest{Name: "tls_v1"})
		done <- err
	}()
	// Wait for the write that carries the call's record (the server's
	// other log lines may come first: release them).
	for {
		select {
		case <-w.arrived:
		case err := <-done:
			t.Fatalf("the call was answered before any log write: %v", err)
		}
		select {
		case err := <-done:
			t.Fatalf("the call was answered while its record was being written: %v", err)
		default:
		}
		w.release <- struct{}{}
		<-w.wrote
		w.mu.Lock()
		recorded := strings.Contains(w.buf.String(), `"msg":"grpc call"`)
		w.mu.Unlock()
		if recorded {
			break
		}
	}
	close(w.release) // later writes (the server's shutdown) pass
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
