package grpcserver_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/waitfor"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// TestDisabledDomain: a disabled domain is refused, for every operation and
// as a convert target, exactly as a domain that does not exist; enabled
// again, it serves the same pseudonyms.
func TestDisabledDomain(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := randomID(t)
	before := e.atRest("rx_v1", e.pseudonymize("prescriber", "rx_v1", id)...)[0]
	tp := e.pseudonymize("prescriber", "rx_v1", randomID(t))[0]
	tp2 := e.pseudonymize("prescriber", "rx_v2", randomID(t))[0]

	// outcomes runs every operation on name (and converts into it) and
	// returns their outcomes.
	outcomes := func(name string) []string {
		good, _, err := client.Blind(id)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		_, err = e.client.GetDomain(as("prescriber"), &pb.GetDomainRequest{Name: name})
		out = append(out, outcome(err, nil))
		r, err := e.client.Pseudonymize(as("prescriber"), &pb.PseudonymizeRequest{Domain: name, Items: []*pb.PseudonymizeItem{{Id: "a", Blinded: good}}})
		out = append(out, outcome(err, errorsOf(r.GetResults())))
		ii, _ := identifyItems(t, tp)
		ir, err := e.client.Identify(as("pharmacy"), &pb.IdentifyRequest{Domain: name, Items: ii})
		out = append(out, outcome(err, errorsOf(ir.GetResults())))
		ci, _ := convertItems(t, tp)
		cr, err := e.client.ConvertTo(as("rx-owner"), &pb.ConvertToRequest{FromDomain: name, ToDomain: "rx_v2", Items: ci})
		out = append(out, outcome(err, errorsOf(cr.GetResults())))
		ci2, _ := convertItems(t, tp2)
		cr, err = e.client.ConvertTo(as("rx-owner"), &pb.ConvertToRequest{FromDomain: "rx_v2", ToDomain: name, Items: ci2})
		out = append(out, outcome(err, errorsOf(cr.GetResults())))
		return out
	}
	unknown := outcomes("nope_v1")
	for _, o := range unknown[:4] {
		if o != "call "+codes.PermissionDenied.String()+"/ERROR_REASON_OPERATION_NOT_ALLOWED" {
			t.Fatalf("unknown domain: %v", unknown)
		}
	}
	if err := e.store.SetDisabled(ctx, "rx_v1", true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cache.Refresh(ctx, "rx_v1"); err != nil {
		t.Fatal(err)
	}
	disabled := outcomes("rx_v1")
	for i := range 4 {
		if disabled[i] != unknown[i] {
			t.Errorf("operation %d on a disabled domain: %s; on an unknown one: %s", i, disabled[i], unknown[i])
		}
	}
	if disabled[4] == "items ok" {
		t.Errorf("convert into a disabled domain succeeded")
	}
	if err := e.store.SetDisabled(ctx, "rx_v1", false); err != nil {
		t.Fatal(err)
	}
	// The cache reads a domain at most once per RefreshGap (1 s).
	waitfor.Cond(t, 10*time.Second, "rx_v1 enabled in the cache", func() bool {
		d, err := e.cache.Refresh(ctx, "rx_v1")
		return err == nil && !d.Disabled
	})
	if after := e.atRest("rx_v1", e.pseudonymize("prescriber", "rx_v1", id)...)[0]; after != before {
		t.Fatal("the pseudonym changed across disable and enable")
	}
}
