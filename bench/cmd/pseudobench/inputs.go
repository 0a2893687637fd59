package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
)

// inputs are the pre-blinded items every call is built from, made before
// the timed phase.
type inputs struct {
	blinded [][]byte
	// transit holds the identify and convert items (when an operation
	// needs them): blinded transit pseudonyms of -domain with their
	// transitInfo, valid until expires.
	transit []transitItem
	expires time.Time
}

// transitItem is a transit pseudonym blinded again for identify or convert.
type transitItem struct {
	blinded []byte
	info    string
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

// prepareTransit makes identify and convert items: it pseudonymizes the
// points with the service (untimed), unblinds the answers into transit
// pseudonyms with the client SDK and blinds those again. They stay valid
// for the domain's ttl.
func prepareTransit(ctx context.Context, api pb.PseudonymizerClient, domain string, ttl time.Duration, blinded [][]byte, u *client.BatchUnblinder, chunk int) ([]transitItem, time.Time, error) {
	items := make([]transitItem, 0, len(blinded))
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
			return nil, expires, fmt.Errorf("preparing transit pseudonyms: %v", err)
		}
		if len(resp.GetResults()) != hi-lo {
			return nil, expires, errors.New("preparing transit pseudonyms: wrong number of results")
		}
		if expires.IsZero() {
			expires = time.Now().Add(ttl)
		}
		for i, r := range resp.GetResults() {
			ev := r.GetEvaluated()
			if ev == nil {
				return nil, expires, fmt.Errorf("preparing transit pseudonyms: item failed: %v", r.GetError().GetMessage())
			}
			tp, err := u.Item(lo+i).Unblind(ev.GetPoint(), ev.GetTransitInfo())
			if err != nil {
				return nil, expires, fmt.Errorf("preparing transit pseudonyms: %v", err)
			}
			bt, _, err := client.BlindTransit(tp)
			if err != nil {
				return nil, expires, fmt.Errorf("preparing transit pseudonyms: %v", err)
			}
			items = append(items, transitItem{blinded: bt, info: tp.Info})
		}
	}
	return items, expires, nil
}

// request builds one request of op's RPC with n items, from the k-th item
// of the inputs on (cycling).
func (in *inputs) request(op, domain, toDomain string, k, n int) any {
	switch baseOp(op) {
	case opIdentify:
		req := &pb.IdentifyRequest{Domain: domain, Items: make([]*pb.IdentifyItem, n)}
		for i := range n {
			t := in.transit[(k+i)%len(in.transit)]
			req.Items[i] = &pb.IdentifyItem{Id: strconv.Itoa(i), Blinded: t.blinded, TransitInfo: t.info}
		}
		return req
	case opConvert:
		req := &pb.ConvertToRequest{FromDomain: domain, ToDomain: toDomain, Items: make([]*pb.ConvertItem, n)}
		for i := range n {
			t := in.transit[(k+i)%len(in.transit)]
			req.Items[i] = &pb.ConvertItem{Id: strconv.Itoa(i), Blinded: t.blinded, TransitInfo: t.info}
		}
		return req
	default:
		req := &pb.PseudonymizeRequest{Domain: domain, Items: make([]*pb.PseudonymizeItem, n)}
		for i := range n {
			req.Items[i] = &pb.PseudonymizeItem{Id: strconv.Itoa(i), Blinded: in.blinded[(k+i)%len(in.blinded)]}
		}
		return req
	}
}

// requests builds the request messages of a run: consecutive slices of
// batch items, cycling through the inputs, so that a server cache could not
// help. All callers share them (marshaling does not modify a message).
// Streams send the same requests, wrapped in their stream messages.
func (in *inputs) requests(op, domain, toDomain string, batch int) []any {
	n := len(in.blinded)
	if needsTransit(op) {
		n = len(in.transit)
	}
	out := make([]any, max(n/batch, 1))
	for j := range out {
		out[j] = in.request(op, domain, toDomain, j*batch, batch)
	}
	return out
}

// mixRequests builds the requests of the prescription mix: each has 1 to 3
// items (uniform), and is an identify with probability 0.2, a pseudonymize
// otherwise. The sequence is the same in every run (a fixed seed).
func (in *inputs) mixRequests(domain string) []any {
	rng := rand.New(rand.NewPCG(13, 2026))
	n := max(len(in.blinded), len(in.transit))
	out := make([]any, n)
	kp, ki := 0, 0
	for j := range out {
		items := mixItemsMin + rng.IntN(mixItemsMax-mixItemsMin+1)
		if rng.Float64() < mixIdentifyShare {
			out[j] = in.request(opIdentify, domain, "", ki, items)
			ki += items
		} else {
			out[j] = in.request(opPseudonymize, domain, "", kp, items)
			kp += items
		}
	}
	return out
}
