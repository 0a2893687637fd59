package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// inputs are the pre-blinded items every call is built from, made before
// the timed phase.
type inputs struct {
	blinded [][]byte
	// transit holds the identify items (op identify only): blinded
	// transit pseudonyms with their transitInfo, valid until expires.
	transit []*pb.IdentifyItem
	expires time.Time
}

// blindPoints blinds n distinct identifiers.
func blindPoints(n int) ([][]byte, *client.BatchUnblinder, error) {
	ids := make([][]byte, n)
	for i := range ids {
		ids[i] = fmt.Appendf(nil, "%011d", 85000000000+i)
	}
	blinded, u, errs := client.BlindBatch(ids)
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return blinded, u, nil
}

// prepareIdentify makes identify items: it pseudonymizes the points with
// the service (untimed), unblinds the answers into transit pseudonyms and
// blinds those again. They stay valid for the domain's ttl.
func prepareIdentify(ctx context.Context, api pb.PseudonymizerClient, domain string, ttl time.Duration, blinded [][]byte, u *client.BatchUnblinder, chunk int) ([]*pb.IdentifyItem, time.Time, error) {
	items := make([]*pb.IdentifyItem, 0, len(blinded))
	expires := time.Time{}
	for lo := 0; lo < len(blinded); lo += chunk {
		hi := min(lo+chunk, len(blinded))
		req := &pb.PseudonymizeRequest{Domain: domain}
		for _, b := range blinded[lo:hi] {
			req.Items = append(req.Items, &pb.PseudonymizeItem{Blinded: b})
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := api.Pseudonymize(cctx, req)
		cancel()
		if err != nil {
			return nil, expires, fmt.Errorf("preparing identify items: %v", err)
		}
		if len(resp.GetResults()) != hi-lo {
			return nil, expires, errors.New("preparing identify items: wrong number of results")
		}
		if expires.IsZero() {
			expires = time.Now().Add(ttl)
		}
		for i, r := range resp.GetResults() {
			ev := r.GetEvaluated()
			if ev == nil {
				return nil, expires, fmt.Errorf("preparing identify items: item failed: %v", r.GetError().GetMessage())
			}
			tp, err := u.Item(lo+i).Unblind(ev.GetPoint(), ev.GetTransitInfo())
			if err != nil {
				return nil, expires, fmt.Errorf("preparing identify items: %v", err)
			}
			bt, _, err := client.BlindTransit(tp)
			if err != nil {
				return nil, expires, fmt.Errorf("preparing identify items: %v", err)
			}
			items = append(items, &pb.IdentifyItem{Id: strconv.Itoa(lo + i), Blinded: bt, TransitInfo: tp.Info})
		}
	}
	return items, expires, nil
}

// requests builds the request messages of a run: consecutive slices of
// batch items, cycling through the inputs, so that a server cache could not
// help. All callers share them (marshaling does not modify a message).
func (in *inputs) requests(op, domain string, batch int) []any {
	n := len(in.blinded)
	if op == "identify" {
		n = len(in.transit)
	}
	count := max(n/batch, 1)
	out := make([]any, count)
	for j := range out {
		switch op {
		case "identify":
			req := &pb.IdentifyRequest{Domain: domain, Items: make([]*pb.IdentifyItem, batch)}
			for i := range batch {
				req.Items[i] = in.transit[(j*batch+i)%n]
			}
			out[j] = req
		default:
			req := &pb.PseudonymizeRequest{Domain: domain, Items: make([]*pb.PseudonymizeItem, batch)}
			for i := range batch {
				req.Items[i] = &pb.PseudonymizeItem{Id: strconv.Itoa(i), Blinded: in.blinded[(j*batch+i)%n]}
			}
			out[j] = req
		}
	}
	return out
}
