package grpcserver

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// countingSource counts the reads of a real store.
type countingSource struct {
	keys.Source
	reads atomic.Int32
}

func (c *countingSource) Domain(ctx context.Context, name string) (*keys.Domain, error) {
	c.reads.Add(1)
	return c.Source.Domain(ctx, name)
}

// An owner that sees a rotation before the service's next poll seals under
// a kid the service does not know yet: the service re-reads the domain
// (rate-limited) and evaluates those items again, so no call fails.
func TestUnknownKidRefreshesKeys(t *testing.T) {
	ctx := context.Background()
	store, err := keys.OpenFileStore(filepath.Join(t.TempDir(), "keys.json"), true)
	if err != nil {
		t.Fatal(err)
	}
	spec := keys.DomainSpec{Name: "rx_v1", Audience: "urn:test:rx", Policy: keys.Policy{Pseudonymize: []string{"*"}, Identify: []string{"*"}}}
	if _, err := store.CreateDomain(ctx, spec); err != nil {
		t.Fatal(err)
	}
	src := &countingSource{Source: store}
	cache, err := keys.NewCache(ctx, src, &keys.CacheOptions{Interval: time.Hour, RefreshGap: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	srv := newHandler(cache, DefaultMaxBatch, nil, slog.Default())
	call := auth.WithPrincipal(ctx, "pharmacist")

	kid, err := store.RotateTransitKey(ctx, "rx_v1")
	if err != nil {
		t.Fatal(err)
	}
	o, err := owner.New(ctx, "rx_v1", store, owner.WithRefreshInterval(0)) // reads t2 at once
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := cache.Domain("rx_v1"); d.Transit.Active == kid {
		t.Fatal("the cache saw the rotation already; the test proves nothing")
	}
	blinded, _, _ := client.Blind([]byte("85073003328"))
	ev, err := srv.Pseudonymize(call, &pb.PseudonymizeRequest{Domain: "rx_v1", Items: []*pb.PseudonymizeItem{{Id: "0", Blinded: blinded}}})
	if err != nil || ev.GetResults()[0].GetError() != nil {
		t.Fatal(err, ev)
	}
	var p [32]byte
	copy(p[:], blinded) // any valid point will do as a pseudonym at rest
	tp, err := o.InTransit(p)
	if err != nil {
		t.Fatal(err)
	}
	items := make([]*pb.IdentifyItem, 3)
	for i := range items {
		b, _, _ := client.BlindTransit(tp)
		items[i] = &pb.IdentifyItem{Id: "x", Blinded: b, TransitInfo: tp.Info}
	}
	reads := src.reads.Load()
	resp, err := srv.Identify(call, &pb.IdentifyRequest{Domain: "rx_v1", Items: items})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range resp.GetResults() {
		if r.GetError() != nil {
			t.Fatalf("item %d failed after the refresh: %v", i, r.GetError())
		}
	}
	if got := src.reads.Load() - reads; got != 1 {
		t.Fatalf("%d reads of the store for one batch, want 1", got)
	}
	// A kid that exists nowhere: refused, and within the gap no more reads.
	forged, _ := keys.GenerateDomain(spec, nil)
	forged.Transit.Active, forged.Transit.Keys = "t9", map[string]keys.Secret{"t9": forged.Transit.Keys["t1"]}
	fo, _ := owner.New(ctx, "rx_v1", owner.StaticKeys{D: forged}, owner.WithRefreshInterval(0))
	ftp, _ := fo.InTransit(p)
	fb, _, _ := client.BlindTransit(ftp)
	for range 5 {
		resp, err := srv.Identify(call, &pb.IdentifyRequest{Domain: "rx_v1", Items: []*pb.IdentifyItem{{Id: "f", Blinded: fb, TransitInfo: ftp.Info}}})
		if err != nil || resp.GetResults()[0].GetError() == nil {
			t.Fatalf("forged kid accepted: %v", err)
		}
	}
	if got := src.reads.Load() - reads; got != 1 {
		t.Fatalf("%d reads after a flood of unknown kids, want 1 (rate-limited)", got)
	}
}

// hangingSource is a store that stops answering once hang is set: its
// reads wait until their context ends, and say so.
type hangingSource struct {
	keys.Source
	hang      atomic.Bool
	cancelled chan error
}

func (h *hangingSource) Domain(ctx context.Context, name string) (*keys.Domain, error) {
	if !h.hang.Load() {
		return h.Source.Domain(ctx, name)
	}
	<-ctx.Done()
	h.cancelled <- ctx.Err()
	return nil, keys.ErrUnavailable
}

// TestUnknownKidRefreshBounded: while the key store hangs (Vault down, its
// connections black-holed), a call carrying an unknown kid is not held up
// by the store: the refresh gives up at RefreshTimeout (the
// call's own deadline is far longer), and the item fails with UNKNOWN_KID.
func TestUnknownKidRefreshBounded(t *testing.T) {
	ctx := context.Background()
	store, err := keys.OpenFileStore(filepath.Join(t.TempDir(), "keys.json"), true)
	if err != nil {
		t.Fatal(err)
	}
	spec := keys.DomainSpec{Name: "rx_v1", Audience: "urn:test:rx", Policy: keys.Policy{Pseudonymize: []string{"*"}, Identify: []string{"*"}}}
	if _, err := store.CreateDomain(ctx, spec); err != nil {
		t.Fatal(err)
	}
	src := &hangingSource{Source: store, cancelled: make(chan error, 1)}
	cache, err := keys.NewCache(ctx, src, &keys.CacheOptions{Interval: time.Hour, Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	srv := newHandler(cache, DefaultMaxBatch, nil, slog.Default())
	src.hang.Store(true)

	forged, _ := keys.GenerateDomain(spec, nil)
	forged.Transit.Active, forged.Transit.Keys = "t9", map[string]keys.Secret{"t9": forged.Transit.Keys["t1"]}
	fo, _ := owner.New(ctx, "rx_v1", owner.StaticKeys{D: forged}, owner.WithRefreshInterval(0))
	var p [32]byte
	b0, _, _ := client.Blind([]byte("85073003328"))
	copy(p[:], b0)
	ftp, _ := fo.InTransit(p)
	fb, _, _ := client.BlindTransit(ftp)
	call, cancel := context.WithTimeout(auth.WithPrincipal(ctx, "pharmacist"), time.Hour)
	defer cancel()
	resp, err := srv.Identify(call, &pb.IdentifyRequest{Domain: "rx_v1", Items: []*pb.IdentifyItem{{Blinded: fb, TransitInfo: ftp.Info}}})
	if err != nil {
		t.Fatal(err)
	}
	if e := resp.GetResults()[0].GetError(); e == nil || !strings.Contains(e.String(), "ERROR_REASON_UNKNOWN_KID") {
		t.Fatalf("item: %v, want UNKNOWN_KID", resp.GetResults()[0])
	}
	if err := <-src.cancelled; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the store read ended with %v, want the refresh deadline", err)
	}
}
