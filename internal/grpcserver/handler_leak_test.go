package grpcserver_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/grpcserver"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// secrets collects values that must never appear in logs or metrics, and
// finds them in any of their usual text encodings.
type secrets struct {
	mu    sync.Mutex
	byLen map[int]map[string]string // encoded form → what it is
}

func (s *secrets) addText(what, v string) {
	if v == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byLen == nil {
		s.byLen = map[int]map[string]string{}
	}
	if s.byLen[len(v)] == nil {
		s.byLen[len(v)] = map[string]string{}
	}
	s.byLen[len(v)][v] = what
}

// add records raw bytes, base64 (std and url, padded or not) and hex.
func (s *secrets) add(what string, b []byte) {
	if len(b) == 0 {
		return
	}
	s.addText(what+" (raw)", string(b))
	s.addText(what+" (base64)", base64.StdEncoding.EncodeToString(b))
	s.addText(what+" (base64 raw)", base64.RawStdEncoding.EncodeToString(b))
	s.addText(what+" (base64url)", base64.URLEncoding.EncodeToString(b))
	s.addText(what+" (base64url raw)", base64.RawURLEncoding.EncodeToString(b))
	s.addText(what+" (hex)", hex.EncodeToString(b))
	s.addText(what+" (HEX)", strings.ToUpper(hex.EncodeToString(b)))
}

// addTransit records a transit pseudonym: its point, its transitInfo and
// the transitInfo's encrypted parts.
func (s *secrets) addTransit(tp *pseudonym.Transit) {
	s.add("transit point", tp.Point[:])
	s.addTransitInfo(tp.Info)
}

func (s *secrets) addTransitInfo(ti string) {
	s.addText("transitInfo", ti)
	if parts := strings.Split(ti, "."); len(parts) == 5 {
		s.addText("transitInfo ciphertext", parts[3])
		s.addText("transitInfo tag", parts[4])
	}
}

// find returns what the first secret found in out is.
func (s *secrets) find(out string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for n, set := range s.byLen {
		for i := 0; i+n <= len(out); i++ {
			if what, ok := set[out[i:i+n]]; ok {
				return what, true
			}
		}
	}
	return "", false
}

func (s *secrets) count() int {
	n := 0
	for _, set := range s.byLen {
		n += len(set)
	}
	return n
}

// TestNoSecretInLogsOrMetrics runs 1,000 calls of every kind, some failing,
// and checks that no identifier, point, transitInfo or key shows in the
// logs, the metrics or the spans (every span the server makes, as an
// exporter would receive it: tracing_test.go).
func TestNoSecretInLogsOrMetrics(t *testing.T) {
	sink := newSpanSink()
	e := newEnv(t, func(c *grpcserver.Config) {
		c.Rate, c.Burst = 1e6, 1e6
		c.MaxBatch = 5
		c.TracerProvider = sink.provider()
	})
	ctx := context.Background()
	sec := &secrets{}
	for _, spec := range testSpecs {
		d, err := e.store.Domain(ctx, spec.Name)
		if err != nil {
			t.Fatal(err)
		}
		sec.add("scalar of "+spec.Name, d.Scalar)
		for kid, k := range d.Transit.Keys {
			sec.add("transit key "+kid+" of "+spec.Name, k)
		}
	}

	var stored []pseudonym.AtRest // pseudonyms at rest of rx_v1
	addStored := func(p pseudonym.AtRest) {
		sec.add("pseudonym at rest", p[:])
		stored = append(stored, p)
	}
	pseudonymizeOK := func(who, domain string, n int) {
		ids := make([][]byte, n)
		for i := range ids {
			ids[i] = randomID(t)
			sec.add("identifier", ids[i])
		}
		blinded, bu, _ := client.BlindBatch(ids)
		req := &pb.PseudonymizeRequest{Domain: domain}
		for _, b := range blinded {
			sec.add("blinded point", b)
			req.Items = append(req.Items, &pb.PseudonymizeItem{Id: "item", Blinded: b})
		}
		resp, err := e.client.Pseudonymize(as(who), req)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range resp.GetResults() {
			ev := r.GetEvaluated()
			sec.add("evaluated point", ev.GetPoint())
			sec.addTransitInfo(ev.GetTransitInfo())
			tp, err := bu.Item(i).Unblind(ev.GetPoint(), ev.GetTransitInfo())
			if err != nil {
				t.Fatal(err)
			}
			sec.addTransit(tp)
			if domain == "rx_v1" {
				addStored(e.atRest("rx_v1", tp)[0])
			}
		}
	}
	identifyItem := func(p pseudonym.AtRest, opts ...owner.TransitOption) *pb.IdentifyItem {
		tp := e.inTransit("rx_v1", p, opts...)
		sec.addTransit(tp)
		items, _ := identifyItems(t, tp)
		sec.add("blinded transit point", items[0].GetBlinded())
		return items[0]
	}
	record := func(results interface{ GetResults() []*pb.IdentifyResult }) {
		for _, r := range results.GetResults() {
			sec.add("identify output", r.GetPoint())
		}
	}

	pseudonymizeOK("prescriber", "rx_v1", 3)
	const calls = 1000
	for i := range calls {
		pick := stored[i%len(stored)]
		switch i % 10 {
		case 0, 1:
			pseudonymizeOK("prescriber", "rx_v1", 1+i%3)
		case 2:
			items := []*pb.IdentifyItem{identifyItem(pick), identifyItem(pick)}
			resp, err := e.client.Identify(as("pharmacy"), &pb.IdentifyRequest{Domain: "rx_v1", Items: items})
			if err != nil {
				t.Fatal(err)
			}
			record(resp)
		case 3:
			tp := e.inTransit("rx_v1", pick)
			sec.addTransit(tp)
			items, us := convertItems(t, tp)
			sec.add("blinded transit point", items[0].GetBlinded())
			resp, err := e.client.ConvertTo(as("rx-owner"), &pb.ConvertToRequest{FromDomain: "rx_v1", ToDomain: "rx_v2", Items: items})
			if err != nil {
				t.Fatal(err)
			}
			ev := resp.GetResults()[0].GetEvaluated()
			sec.add("converted point", ev.GetPoint())
			sec.addTransitInfo(ev.GetTransitInfo())
			tb, err := us[0].Unblind(ev.GetPoint(), ev.GetTransitInfo())
			if err != nil {
				t.Fatal(err)
			}
			sec.addTransit(tb)
		case 4:
			if _, err := e.client.GetDomain(as("pharmacy"), &pb.GetDomainRequest{Name: "rx_v1"}); err != nil {
				t.Fatal(err)
			}
		case 5: // identify by an owner: denied
			if _, err := e.client.Identify(as("rx-owner"), &pb.IdentifyRequest{Domain: "rx_v1", Items: []*pb.IdentifyItem{identifyItem(pick)}}); err == nil {
				t.Fatal("owner identified")
			}
		case 6: // per-item failures: expired, forged, bad point
			expired := identifyItem(pick, owner.IssuedAt(time.Now().Add(-time.Hour)))
			forged := identifyItem(pick)
			forged.TransitInfo = tamper(forged.GetTransitInfo())
			sec.addTransitInfo(forged.GetTransitInfo())
			bad := identifyItem(pick)
			bad.Blinded = bad.GetBlinded()[:31]
			resp, err := e.client.Identify(as("pharmacy"), &pb.IdentifyRequest{Domain: "rx_v1", Items: []*pb.IdentifyItem{expired, forged, bad}})
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetResults()[0].GetError() == nil || resp.GetResults()[1].GetError() == nil || resp.GetResults()[2].GetError() == nil {
				t.Fatal("bad items succeeded")
			}
		case 7: // unknown domain, batch too large, wrong subject
			if _, err := e.client.Pseudonymize(as("prescriber"), &pb.PseudonymizeRequest{Domain: "nope_v1"}); err == nil {
				t.Fatal("unknown domain accepted")
			}
			items := make([]*pb.IdentifyItem, 6)
			for j := range items {
				items[j] = identifyItem(pick)
			}
			if _, err := e.client.Identify(as("pharmacy"), &pb.IdentifyRequest{Domain: "rx_v1", Items: items}); err == nil {
				t.Fatal("oversized batch accepted")
			}
		case 8:
			resp, err := e.client.Identify(as("pharmacy"), &pb.IdentifyRequest{Domain: "rx_v1",
				Items: []*pb.IdentifyItem{identifyItem(pick, owner.Subject("someone-else"))}})
			if err != nil || resp.GetResults()[0].GetError() == nil {
				t.Fatalf("wrong subject: %v", err)
			}
		case 9: // a stream
			s, err := e.client.IdentifyStream(as("pharmacy"))
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if err := s.Send(&pb.IdentifyStreamRequest{Request: &pb.IdentifyRequest{Domain: "rx_v1", Items: []*pb.IdentifyItem{identifyItem(pick)}}}); err != nil {
					t.Fatal(err)
				}
				resp, err := s.Recv()
				if err != nil {
					t.Fatal(err)
				}
				record(resp.GetResponse())
			}
			_ = s.CloseSend()
			if _, err := s.Recv(); err != io.EOF {
				t.Fatal(err)
			}
		}
	}

	// The detector finds what it should.
	canary := randomID(t)
	sec.add("canary", canary)
	if _, found := sec.find(`{"x":"` + base64.RawURLEncoding.EncodeToString(canary) + `"}`); !found {
		t.Fatal("the secret detector misses a base64url identifier")
	}
	sec.mu.Lock()
	for _, set := range sec.byLen {
		for k, v := range set {
			if strings.HasPrefix(v, "canary") {
				delete(set, k)
			}
		}
	}
	sec.mu.Unlock()

	logs := string(e.logs.Bytes())
	if n := strings.Count(logs, `"msg":"grpc call"`); n < calls {
		t.Fatalf("%d audit records for %d calls", n, calls)
	}
	rec := httptest.NewRecorder()
	e.srv.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	metrics := rec.Body.String()
	if !strings.Contains(metrics, `pseudonymizer_items_total{operation="Identify",outcome="ERROR_REASON_EXPIRED"}`) ||
		!strings.Contains(metrics, `grpc_server_handled_total`) {
		t.Fatalf("metrics lack the expected series:\n%s", metrics)
	}
	ended := sink.all(t)
	if len(ended) < calls {
		t.Fatalf("%d spans for %d calls", len(ended), calls)
	}
	spans := dumpSpans(t, ended)
	if !strings.Contains(spans, `pseudonymizer.outcome=ERROR_REASON_BATCH_TOO_LARGE`) || !strings.Contains(spans, `pseudonymizer.failed_items=3`) {
		t.Fatal("the spans lack the expected attributes")
	}
	t.Logf("%d secret encodings checked against %d bytes of logs, %d bytes of metrics and %d bytes of spans",
		sec.count(), len(logs), len(metrics), len(spans))
	if what, found := sec.find(logs); found {
		t.Errorf("the logs contain a %s", what)
	}
	if what, found := sec.find(metrics); found {
		t.Errorf("the metrics contain a %s", what)
	}
	if what, found := sec.find(spans); found {
		t.Errorf("the spans contain a %s", what)
	}
}
