package grpcserver_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/auth"
	"github.com/ehealth-pseudo/pseudonymizer/internal/grpcserver"
	"github.com/ehealth-pseudo/pseudonymizer/internal/servertest"
	"github.com/ehealth-pseudo/pseudonymizer/internal/syncbuf"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
	pb "github.com/ehealth-pseudo/pseudonymizer/proto/pseudonymizer/v1"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
)

// The test domains and their policies.
//
//	rx_v1     pseudonymize: prescriber, pharmacy   identify: pharmacy, rx-owner (an owner: refused)
//	          owners: rx-owner   convert: rx_v2 ← rx-owner, ghost_v1 ← rx-owner (ghost_v1 does not exist)
//	rx_v2     pseudonymize: prescriber   identify: pharmacy   owners: rx-owner
//	open_v1   pseudonymize: *   identify: *   owners: open-owner
//	secret_v1 pseudonymize: someone-else
var testSpecs = []keys.DomainSpec{
	{Name: "rx_v1", Audience: "urn:test:rx:v1", Policy: keys.Policy{
		Pseudonymize: []string{"prescriber", "pharmacy"},
		Identify:     []string{"pharmacy"},
		Owners:       []string{"rx-owner"},
		Convert:      map[string][]string{"rx_v2": {"rx-owner"}, "ghost_v1": {"rx-owner"}},
	}},
	{Name: "rx_v2", Audience: "urn:test:rx:v2", Policy: keys.Policy{
		Pseudonymize: []string{"prescriber"},
		Identify:     []string{"pharmacy"},
		Owners:       []string{"rx-owner"},
	}},
	{Name: "open_v1", Audience: "urn:test:open:v1", Policy: keys.Policy{
		Pseudonymize: []string{"*"},
		Identify:     []string{"*"},
		Owners:       []string{"open-owner"},
	}},
	{Name: "secret_v1", Audience: "urn:test:secret:v1", Policy: keys.Policy{
		Pseudonymize: []string{"someone-else"},
	}},
}

// env is a real server (grpcserver: every interceptor) over bufconn, in
// development mode: the caller is named by x-pseudonymizer-principal.
type env struct {
	t      *testing.T
	store  *keys.FileStore
	cache  *keys.Cache
	logs   *syncbuf.Buffer
	log    *slog.Logger
	srv    *grpcserver.Server
	client pb.PseudonymizerClient
	conn   *grpc.ClientConn
	owners map[string]*owner.Owner
}

func newEnv(t *testing.T, configure ...func(*grpcserver.Config)) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t, logs: &syncbuf.Buffer{}, owners: map[string]*owner.Owner{}}
	e.log = slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var err error
	e.store, err = keys.OpenFileStore(filepath.Join(t.TempDir(), "keys.json"), true)
	if err != nil {
		t.Fatal(err)
	}
	for _, spec := range testSpecs {
		if _, err := e.store.CreateDomain(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	e.cache, err = keys.NewCache(ctx, e.store, &keys.CacheOptions{Interval: time.Hour, Logger: e.log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.cache.Close() })
	cfg := grpcserver.Config{
		Keys:     e.cache,
		Auth:     auth.New(auth.Config{Dev: true}),
		Logger:   e.log,
		Registry: prometheus.NewRegistry(),
	}
	for _, c := range configure {
		c(&cfg)
	}
	e.serve(cfg)
	for _, spec := range testSpecs {
		d, err := e.store.Domain(ctx, spec.Name)
		if err != nil {
			t.Fatal(err)
		}
		o, err := owner.New(ctx, spec.Name, owner.StaticKeys{D: d}, owner.WithRefreshInterval(0), owner.WithLogger(e.log))
		if err != nil {
			t.Fatal(err)
		}
		e.owners[spec.Name] = o
	}
	return e
}

// serve starts a server with cfg on a new bufconn listener and connects
// e.client to it.
func (e *env) serve(cfg grpcserver.Config) {
	s := servertest.Start(e.t, cfg, false)
	conn := s.Dial(e.t, grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20), grpc.MaxCallRecvMsgSize(64<<20)))
	e.srv, e.conn, e.client = s.Server, conn, pb.NewPseudonymizerClient(conn)
}

// as returns a context whose calls are made by principal.
func as(principal string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), auth.DevPrincipalHeader, principal)
}

// owner returns the owner SDK of a domain.
func (e *env) owner(domain string) *owner.Owner { return e.owners[domain] }

// pseudonymize runs the client side of pseudonymize for each id and
// returns the transit pseudonyms.
func (e *env) pseudonymize(principal, domain string, ids ...[]byte) []*pseudonym.Transit {
	e.t.Helper()
	blinded, bu, errs := client.BlindBatch(ids)
	req := &pb.PseudonymizeRequest{Domain: domain}
	for i, b := range blinded {
		if errs[i] != nil {
			e.t.Fatal(errs[i])
		}
		req.Items = append(req.Items, &pb.PseudonymizeItem{Id: hex.EncodeToString([]byte{byte(i)}), Blinded: b})
	}
	resp, err := e.client.Pseudonymize(as(principal), req)
	if err != nil {
		e.t.Fatalf("Pseudonymize(%s as %s): %v", domain, principal, err)
	}
	out := make([]*pseudonym.Transit, len(ids))
	for i, r := range resp.GetResults() {
		ev := r.GetEvaluated()
		if ev == nil {
			e.t.Fatalf("Pseudonymize item %d: %v", i, r.GetError())
		}
		if out[i], err = bu.Item(i).Unblind(ev.GetPoint(), ev.GetTransitInfo()); err != nil {
			e.t.Fatal(err)
		}
	}
	return out
}

// atRest opens transit pseudonyms of domain as its owner.
func (e *env) atRest(domain string, ts ...*pseudonym.Transit) []pseudonym.AtRest {
	e.t.Helper()
	out := make([]pseudonym.AtRest, len(ts))
	for i, tp := range ts {
		p, err := e.owner(domain).AtRest(context.Background(), tp)
		if err != nil {
			e.t.Fatalf("owner %s AtRest: %v", domain, err)
		}
		out[i] = p
	}
	return out
}

// inTransit makes a transit form of a stored pseudonym, as the owner.
func (e *env) inTransit(domain string, p pseudonym.AtRest, opts ...owner.TransitOption) *pseudonym.Transit {
	e.t.Helper()
	tp, err := e.owner(domain).InTransit(p, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return tp
}

// identifyItems blinds transit pseudonyms for identify.
func identifyItems(t *testing.T, ts ...*pseudonym.Transit) ([]*pb.IdentifyItem, []*client.Unblinder) {
	t.Helper()
	items := make([]*pb.IdentifyItem, len(ts))
	us := make([]*client.Unblinder, len(ts))
	for i, tp := range ts {
		b, u, err := client.BlindTransit(tp)
		if err != nil {
			t.Fatal(err)
		}
		items[i] = &pb.IdentifyItem{Id: hex.EncodeToString([]byte{byte(i)}), Blinded: b, TransitInfo: tp.Info}
		us[i] = u
	}
	return items, us
}

// convertItems blinds transit pseudonyms for convert.
func convertItems(t *testing.T, ts ...*pseudonym.Transit) ([]*pb.ConvertItem, []*client.Unblinder) {
	t.Helper()
	items := make([]*pb.ConvertItem, len(ts))
	us := make([]*client.Unblinder, len(ts))
	for i, tp := range ts {
		b, u, err := client.BlindTransit(tp)
		if err != nil {
			t.Fatal(err)
		}
		items[i] = &pb.ConvertItem{Id: hex.EncodeToString([]byte{byte(i)}), Blinded: b, TransitInfo: tp.Info}
		us[i] = u
	}
	return items, us
}

// randomID returns a fresh identifier that cannot occur in logs by chance.
func randomID(t testing.TB) []byte {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return []byte("pat-" + hex.EncodeToString(b[:]))
}

// errorInfo returns the ErrorInfo of a status, checking its domain.
func errorInfo(t *testing.T, st *status.Status) *errdetails.ErrorInfo {
	t.Helper()
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			if info.GetDomain() != "pseudonymizer.v1" {
				t.Errorf("ErrorInfo domain = %q", info.GetDomain())
			}
			return info
		}
	}
	t.Fatalf("status %v has no ErrorInfo", st)
	return nil
}

// wantCallErr checks a call's error code and ErrorInfo reason.
func wantCallErr(t *testing.T, err error, code codes.Code, reason pb.ErrorReason) *status.Status {
	t.Helper()
	if err == nil {
		t.Fatalf("call succeeded; want %v %v", code, reason)
	}
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("not a status: %v", err)
	}
	if st.Code() != code {
		t.Fatalf("code = %v (%s); want %v", st.Code(), st.Message(), code)
	}
	if got := errorInfo(t, st).GetReason(); got != reason.String() {
		t.Fatalf("reason = %s; want %s", got, reason)
	}
	return st
}

// wantItemErr checks one item's google.rpc.Status.
func wantItemErr(t *testing.T, what string, s interface{ GetError() *spb.Status }, code codes.Code, reason pb.ErrorReason) {
	t.Helper()
	if s.GetError() == nil {
		t.Fatalf("%s: item succeeded; want %v %v", what, code, reason)
	}
	st := status.FromProto(s.GetError())
	if st.Code() != code {
		t.Fatalf("%s: code = %v (%s); want %v", what, st.Code(), st.Message(), code)
	}
	if got := errorInfo(t, st).GetReason(); got != reason.String() {
		t.Fatalf("%s: reason = %s; want %s", what, got, reason)
	}
}
