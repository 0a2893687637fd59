package grpcserver

import (
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/ehealth-pseudo/pseudonymizer/internal/rpcstatus"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/protoerr"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonymizer"
)

// oneDomain is a KeySource serving one domain that a test can replace.
type oneDomain struct {
	mu sync.Mutex
	d  *keys.Domain
}

func (o *oneDomain) Domain(name string) (*keys.Domain, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if name != o.d.Name {
		return nil, keys.ErrUnknownDomain
	}
	return o.d, nil
}

func (o *oneDomain) Health() error { return nil }

func TestPreparedOncePerGeneration(t *testing.T) {
	d, err := keys.GenerateDomain(keys.DomainSpec{Name: "a_v1", Audience: "urn:test:a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.Generation = 1
	src := &oneDomain{d: d}
	s := newHandler(src, DefaultMaxBatch, nil, slog.Default())
	first, err := s.domain("a_v1")
	if err != nil {
		t.Fatal(err)
	}
	again, _ := s.domain("a_v1")
	if again != first {
		t.Fatal("the domain was prepared again without a key change")
	}

	// A new generation (a transit key rotation) is prepared anew.
	n := *d
	k, _ := keys.NewTransitKey(nil)
	n.Transit = keys.Transit{Active: "t2", Keys: map[string]keys.Secret{"t1": d.Transit.Keys["t1"], "t2": k}}
	n.Generation = 2
	src.mu.Lock()
	src.d = &n
	src.mu.Unlock()
	rotated, _ := s.domain("a_v1")
	if rotated == first || rotated.d.ActiveKid() != "t2" {
		t.Fatal("a new generation was not prepared")
	}
	if _, err := s.domain("b_v1"); !errors.Is(err, keys.ErrUnknownDomain) {
		t.Fatalf("unknown domain: %v", err)
	}
}

func (o *oneDomain) IsOwner(p string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Contains(o.d.Policy.Owners, p) || slices.Contains(o.d.Policy.Owners, "*")
}

// TestStatusFromTheTable: for every row of the protocol's error table, the
// server's status has the row's code, reason and message (the client SDK
// reads statuses back with the same table: client's round-trip test).
func TestStatusFromTheTable(t *testing.T) {
	for _, e := range protoerr.Entries() {
		st := toStatus(e.Err)
		msg, _ := e.Describe(e.Err)
		if st.Code() != e.Code || rpcstatus.ReasonOf(st) != e.Reason || st.Message() != msg {
			t.Errorf("%v: %v %q %q, want %v %q %q", e.Err, st.Code(), rpcstatus.ReasonOf(st), st.Message(), e.Code, e.Reason, msg)
		}
	}
	// Key store errors are translated; unknown errors are INTERNAL.
	for err, want := range map[error]error{
		keys.ErrUnknownDomain:       protoerr.ErrUnknownDomain,
		keys.ErrUnavailable:         protoerr.ErrKeyStoreUnavailable,
		errors.New("anything"):      protoerr.ErrInternal,
		&pseudonymizer.PanicError{}: protoerr.ErrInternal,
	} {
		e, _ := protoerr.Lookup(want)
		if st := toStatus(err); st.Code() != e.Code || rpcstatus.ReasonOf(st) != e.Reason {
			t.Errorf("%v: %v %s, want %v %s", err, st.Code(), rpcstatus.ReasonOf(st), e.Code, e.Reason)
		}
	}
}
