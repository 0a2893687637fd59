package keyshare_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/gtank/ristretto255"
	"github.com/hashicorp/vault/api"

	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/internal/sharetest"
	"github.com/ehealth-pseudo/pseudonymizer/keyshare"
)

func start(t *testing.T) *sharetest.Env {
	t.Helper()
	return sharetest.Start(t)
}

func client(t *testing.T, e *sharetest.Env, token string) *api.Client {
	t.Helper()
	return e.ClientWithToken(t, token)
}

func path(e *sharetest.Env, p string) string { return e.SharesMount + "/" + p }

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func randomScalar(t *testing.T) *ristretto255.Scalar {
	t.Helper()
	s, err := point.RandomScalar(nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func randomPoint(t *testing.T) *ristretto255.Element {
	t.Helper()
	return ristretto255.NewIdentityElement().ScalarBaseMult(randomScalar(t))
}

func scalarFrom(t *testing.T, s string) *ristretto255.Scalar {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	k, err := point.DecodeScalar(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// split splits k for domain with the migrate token and returns k₁ and the
// generation.
func split(t *testing.T, e *sharetest.Env, domain string, k *ristretto255.Scalar) (*ristretto255.Scalar, uint64) {
	t.Helper()
	sec, err := client(t, e, e.MigrateToken).Logical().Write(path(e, "domains/"+domain+"/split"), map[string]any{"k": b64(k.Bytes())})
	if err != nil {
		t.Fatalf("split: %v", err)
	}
	return scalarFrom(t, sec.Data["k1"].(string)), gen(t, sec.Data["generation"])
}

func gen(t *testing.T, v any) uint64 {
	t.Helper()
	n, err := v.(json.Number).Int64()
	if err != nil {
		t.Fatal(err)
	}
	return uint64(n)
}

type group = keyshare.Group

type result struct {
	Points []*ristretto255.Element
	Errors map[int]string
	Error  string
}

// multiply calls the multiply endpoint with token and decodes the results.
func multiply(t *testing.T, e *sharetest.Env, token string, groups ...group) ([]result, error) {
	t.Helper()
	sec, err := client(t, e, token).Logical().Write(path(e, keyshare.PathMultiply), map[string]any{"groups": groups})
	if err != nil {
		return nil, err
	}
	raw, _ := json.Marshal(sec.Data["results"])
	var rs []keyshare.Result
	if err := json.Unmarshal(raw, &rs); err != nil {
		t.Fatal(err)
	}
	if len(rs) != len(groups) {
		t.Fatalf("%d results for %d groups", len(rs), len(groups))
	}
	out := make([]result, len(rs))
	for i, r := range rs {
		out[i] = result{Error: r.Error, Errors: map[int]string{}}
		for _, ie := range r.Errors {
			out[i].Errors[ie.Index] = ie.Error
		}
		if r.Error != "" {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(r.Points)
		if err != nil {
			t.Fatal(err)
		}
		for j := 0; j+32 <= len(b); j += 32 {
			if _, bad := out[i].Errors[j/32]; bad {
				out[i].Points = append(out[i].Points, nil)
				continue
			}
			p, err := point.Decode(b[j : j+32])
			if err != nil {
				t.Fatalf("group %d item %d: the plugin answered an invalid point", i, j/32)
			}
			out[i].Points = append(out[i].Points, p)
		}
	}
	return out, nil
}

func points(ps ...*ristretto255.Element) string {
	var b []byte
	for _, p := range ps {
		b = append(b, p.Bytes()...)
	}
	return b64(b)
}

func mul(s *ristretto255.Scalar, p *ristretto255.Element) *ristretto255.Element {
	return ristretto255.NewIdentityElement().ScalarMult(s, p)
}

func equal(a, b *ristretto255.Element) bool { return a != nil && b != nil && a.Equal(b) == 1 }

func status(err error) int {
	var re *api.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// TestSplitMultiply splits known keys and checks that k₁·k₂·P = k·P for the
// three operations, convert included, with the service's token.
func TestSplitMultiply(t *testing.T) {
	e := start(t)
	kA, kB := randomScalar(t), randomScalar(t)
	k1A, gA := split(t, e, "a_v1", kA)
	k1B, gB := split(t, e, "b_v1", kB)
	if gA != 1 || gB != 1 {
		t.Fatalf("generations %d, %d; want 1", gA, gB)
	}
	if k1A.Equal(kA) == 1 {
		t.Fatal("k₁ = k")
	}
	P, Q := randomPoint(t), randomPoint(t)
	k1Ainv := ristretto255.NewScalar().Invert(k1A)
	rs, err := multiply(t, e, e.ServiceToken,
		group{Op: keyshare.OpPseudonymize, Domain: "a_v1", Generation: gA, Points: points(mul(k1A, P), mul(k1A, Q))},
		group{Op: keyshare.OpIdentify, Domain: "a_v1", Generation: gA, Points: points(mul(k1Ainv, mul(kA, P)))},
		group{Op: keyshare.OpConvert, Domain: "a_v1", Generation: gA, ToDomain: "b_v1", ToGeneration: gB,
			Points: points(mul(ristretto255.NewScalar().Multiply(k1B, k1Ainv), mul(kA, P)))},
	)
	if err != nil {
		t.Fatalf("multiply: %v", err)
	}
	if !equal(rs[0].Points[0], mul(kA, P)) || !equal(rs[0].Points[1], mul(kA, Q)) {
		t.Error("pseudonymize: k₂·k₁·P ≠ k·P")
	}
	if !equal(rs[1].Points[0], P) {
		t.Error("identify: k₂⁻¹·k₁⁻¹·k·P ≠ P")
	}
	if !equal(rs[2].Points[0], mul(kB, P)) {
		t.Error("convert: k₂B·k₂A⁻¹·k₁B·k₁A⁻¹·kA·P ≠ kB·P")
	}

	// The same split again, with the same k, gives the same k₁ (an
	// interrupted migration); another k is refused (no oracle for k₂⁻¹).
	again, _ := split(t, e, "a_v1", kA)
	if again.Equal(k1A) != 1 {
		t.Error("the same split again gave another k₁")
	}
	_, err = client(t, e, e.MigrateToken).Logical().Write(path(e, "domains/a_v1/split"), map[string]any{"k": b64(ristretto255.NewScalar().Add(kA, kA).Bytes())})
	if status(err) != http.StatusBadRequest {
		t.Errorf("splitting again with another k: %v, want 400", err)
	}
}

// TestCreatedSplit: a domain created split (k never exists) multiplies
// consistently: identify undoes pseudonymize.
func TestCreatedSplit(t *testing.T) {
	e := start(t)
	sec, err := client(t, e, e.AdminToken).Logical().Write(path(e, "domains/c_v1"), nil)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	g := gen(t, sec.Data["generation"])
	if _, err := client(t, e, e.AdminToken).Logical().Write(path(e, "domains/c_v1"), nil); status(err) != http.StatusBadRequest {
		t.Errorf("creating twice: %v, want 400", err)
	}
	P := randomPoint(t)
	rs, err := multiply(t, e, e.ServiceToken, group{Op: keyshare.OpPseudonymize, Domain: "c_v1", Generation: g, Points: points(P)})
	if err != nil {
		t.Fatal(err)
	}
	rs2, err := multiply(t, e, e.ServiceToken, group{Op: keyshare.OpIdentify, Domain: "c_v1", Generation: g, Points: points(rs[0].Points[0])})
	if err != nil {
		t.Fatal(err)
	}
	if equal(rs[0].Points[0], P) || !equal(rs2[0].Points[0], P) {
		t.Error("identify does not undo pseudonymize")
	}
	md, err := client(t, e, e.ServiceToken).Logical().Read(path(e, "domains/c_v1"))
	if err != nil || md == nil {
		t.Fatalf("service reading metadata: %v", err)
	}
	if md.Data["origin"] != keyshare.OriginCreated || gen(t, md.Data["generation"]) != 1 {
		t.Errorf("metadata %v", md.Data)
	}
}

// TestItemsAndBatch: invalid points fail alone; unknown domains and
// generations fail their group; the batch bound is enforced.
func TestItemsAndBatch(t *testing.T) {
	e := start(t)
	k := randomScalar(t)
	k1, g := split(t, e, "d_v1", k)
	P := randomPoint(t)
	nonCanonical := bytes.Repeat([]byte{0xff}, 32)
	identity := ristretto255.NewIdentityElement().Bytes()
	var in []byte
	in = append(in, mul(k1, P).Bytes()...)
	in = append(in, nonCanonical...)
	in = append(in, identity...)
	in = append(in, mul(k1, P).Bytes()...)
	rs, err := multiply(t, e, e.ServiceToken,
		group{Op: keyshare.OpPseudonymize, Domain: "d_v1", Generation: g, Points: b64(in)},
		group{Op: keyshare.OpPseudonymize, Domain: "nope", Generation: 1, Points: points(P)},
		group{Op: keyshare.OpPseudonymize, Domain: "d_v1", Generation: g + 5, Points: points(P)},
		group{Op: keyshare.OpConvert, Domain: "d_v1", Generation: g, ToDomain: "nope", ToGeneration: 1, Points: points(P)},
	)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]string{1: keyshare.ErrorInvalidPoint, 2: keyshare.ErrorInvalidPoint}
	if len(rs[0].Errors) != 2 || rs[0].Errors[1] != want[1] || rs[0].Errors[2] != want[2] {
		t.Errorf("item errors %v, want %v", rs[0].Errors, want)
	}
	if !equal(rs[0].Points[0], mul(k, P)) || !equal(rs[0].Points[3], mul(k, P)) {
		t.Error("valid items next to invalid ones are wrong")
	}
	if rs[1].Error != keyshare.ErrorUnknownDomain || rs[2].Error != keyshare.ErrorUnknownGeneration || rs[3].Error != keyshare.ErrorUnknownDomain {
		t.Errorf("group errors %q %q %q", rs[1].Error, rs[2].Error, rs[3].Error)
	}
	for _, bad := range []group{
		{Op: "double", Domain: "d_v1", Generation: g, Points: points(P)},
		{Op: keyshare.OpPseudonymize, Domain: "d_v1", Generation: g, Points: "not base64!"},
		{Op: keyshare.OpPseudonymize, Domain: "d_v1", Generation: g, Points: b64(make([]byte, 33))},
	} {
		if _, err := multiply(t, e, e.ServiceToken, bad); status(err) != http.StatusBadRequest {
			t.Errorf("%+v: %v, want 400", bad, err)
		}
	}
	// The batch bound (default 1000): 1000 points pass, 1001 do not.
	many := bytes.Repeat(mul(k1, P).Bytes(), 1000)
	if _, err := multiply(t, e, e.ServiceToken, group{Op: keyshare.OpPseudonymize, Domain: "d_v1", Generation: g, Points: b64(many)}); err != nil {
		t.Errorf("1000 points: %v", err)
	}
	_, err = multiply(t, e, e.ServiceToken,
		group{Op: keyshare.OpPseudonymize, Domain: "d_v1", Generation: g, Points: b64(many)},
		group{Op: keyshare.OpPseudonymize, Domain: "d_v1", Generation: g, Points: points(P)})
	if status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "batch too large") {
		t.Errorf("1001 points: %v, want 400 batch too large", err)
	}
	if _, err := client(t, e, e.AdminToken).Logical().Write(path(e, keyshare.PathConfig), map[string]any{"max_batch": 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := multiply(t, e, e.ServiceToken, group{Op: keyshare.OpPseudonymize, Domain: "d_v1", Generation: g, Points: points(P, P, P)}); status(err) != http.StatusBadRequest {
		t.Errorf("3 points over max_batch 2: %v, want 400", err)
	}
}

// TestRefresh: a refresh keeps k (products unchanged), returns the same r
// when asked again, keeps the previous generation until the next refresh,
// which it refuses while that generation is in use unless forced.
func TestRefresh(t *testing.T) {
	e := start(t)
	admin := client(t, e, e.AdminToken)
	k := randomScalar(t)
	k1, g := split(t, e, "r_v1", k)
	sec, err := admin.Logical().Write(path(e, "domains/r_v1/refresh"), map[string]any{"generation": g})
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	r := scalarFrom(t, sec.Data["r"].(string))
	g2 := gen(t, sec.Data["generation"])
	if g2 != g+1 {
		t.Fatalf("generation %d after refresh of %d", g2, g)
	}
	again, err := admin.Logical().Write(path(e, "domains/r_v1/refresh"), map[string]any{"generation": g})
	if err != nil || scalarFrom(t, again.Data["r"].(string)).Equal(r) != 1 || gen(t, again.Data["generation"]) != g2 {
		t.Fatalf("refresh asked again: %v", err)
	}
	k1new := ristretto255.NewScalar().Multiply(k1, r)
	P := randomPoint(t)
	rs, err := multiply(t, e, e.ServiceToken,
		group{Op: keyshare.OpPseudonymize, Domain: "r_v1", Generation: g2, Points: points(mul(k1new, P))},
		group{Op: keyshare.OpPseudonymize, Domain: "r_v1", Generation: g, Points: points(mul(k1, P))},
		group{Op: keyshare.OpPseudonymize, Domain: "r_v1", Generation: g2, Points: points(mul(k1, P))},
	)
	if err != nil {
		t.Fatal(err)
	}
	if !equal(rs[0].Points[0], mul(k, P)) || !equal(rs[1].Points[0], mul(k, P)) {
		t.Error("k·P changed with the refresh, or the previous generation is not accepted")
	}
	if equal(rs[2].Points[0], mul(k, P)) {
		t.Error("the old k₁ works with the new generation")
	}
	// The previous generation was just used: the next refresh waits.
	if _, err := admin.Logical().Write(path(e, "domains/r_v1/refresh"), map[string]any{"generation": g2}); status(err) != http.StatusBadRequest ||
		!strings.Contains(err.Error(), "previous generation") {
		t.Fatalf("refresh while the previous generation is in use: %v, want 400", err)
	}
	md, _ := admin.Logical().Read(path(e, "domains/r_v1"))
	if gen(t, md.Data["previous_generation"]) != g || md.Data["previous_last_used"] == "" {
		t.Errorf("metadata %v", md.Data)
	}
	sec, err = admin.Logical().Write(path(e, "domains/r_v1/refresh"), map[string]any{"generation": g2, "force": true})
	if err != nil {
		t.Fatalf("forced refresh: %v", err)
	}
	r2 := scalarFrom(t, sec.Data["r"].(string))
	g3 := gen(t, sec.Data["generation"])
	k1new2 := ristretto255.NewScalar().Multiply(k1new, r2)
	rs, err = multiply(t, e, e.ServiceToken,
		group{Op: keyshare.OpPseudonymize, Domain: "r_v1", Generation: g3, Points: points(mul(k1new2, P))},
		group{Op: keyshare.OpPseudonymize, Domain: "r_v1", Generation: g, Points: points(mul(k1, P))},
	)
	if err != nil {
		t.Fatal(err)
	}
	if !equal(rs[0].Points[0], mul(k, P)) {
		t.Error("k·P changed with the second refresh")
	}
	if rs[1].Error != keyshare.ErrorUnknownGeneration {
		t.Errorf("the stolen first k₁ (generation %d) still works: %q", g, rs[1].Error)
	}
	// A stale generation is refused.
	if _, err := admin.Logical().Write(path(e, "domains/r_v1/refresh"), map[string]any{"generation": g}); status(err) != http.StatusBadRequest {
		t.Errorf("refresh from a dropped generation: %v, want 400", err)
	}
}

// TestPolicies: the service may multiply (and read metadata) only;
// administrators may create, split, refresh and read, not multiply; an
// owner may do nothing.
func TestPolicies(t *testing.T) {
	e := start(t)
	k := randomScalar(t)
	k1, g := split(t, e, "p_v1", k)
	pg := group{Op: keyshare.OpPseudonymize, Domain: "p_v1", Generation: g, Points: points(mul(k1, randomPoint(t)))}
	if _, err := multiply(t, e, e.ServiceToken, pg); err != nil {
		t.Errorf("service multiply: %v", err)
	}
	type op struct {
		name string
		do   func(c *api.Client) error
	}
	write := func(p string, data map[string]any) func(c *api.Client) error {
		return func(c *api.Client) error { _, err := c.Logical().Write(path(e, p), data); return err }
	}
	ops := []op{
		{"multiply", write(keyshare.PathMultiply, map[string]any{"groups": []group{pg}})},
		{"multiply-patch", func(c *api.Client) error {
			_, err := c.Logical().JSONMergePatch(context.Background(), path(e, keyshare.PathMultiply), map[string]any{"groups": []group{pg}})
			return err
		}},
		{"create", write("domains/p2_v1", nil)},
		{"split", write("domains/p3_v1/split", map[string]any{"k": b64(randomScalar(t).Bytes())})},
		{"refresh", write("domains/p_v1/refresh", map[string]any{"generation": 99})},
		{"config", write(keyshare.PathConfig, map[string]any{"max_batch": 5})},
		{"delete", func(c *api.Client) error { _, err := c.Logical().Delete(path(e, "domains/nothing_v1")); return err }},
		{"read", func(c *api.Client) error { _, err := c.Logical().Read(path(e, "domains/p_v1")); return err }},
		{"list", func(c *api.Client) error { _, err := c.Logical().List(path(e, "domains/")); return err }},
	}
	allowed := map[string]map[string]bool{
		"service": {"multiply": true, "multiply-patch": true, "read": true},
		"admin":   {"create": true, "split": true, "refresh": true, "config": true, "delete": true, "read": true, "list": true},
		"owner":   {},
	}
	tokens := map[string]string{"service": e.ServiceToken, "admin": e.AdminToken, "owner": e.OwnerToken}
	for role, tok := range tokens {
		c := client(t, e, tok)
		for _, o := range ops {
			err := o.do(c)
			denied := status(err) == http.StatusForbidden
			if allowed[role][o.name] && denied {
				t.Errorf("%s %s: denied", role, o.name)
			}
			if !allowed[role][o.name] && !denied {
				t.Errorf("%s %s: %v, want 403", role, o.name, err)
			}
		}
	}
}

// TestNoEndpointReturnsK2 enumerates every path and operation of the
// engine with the root token and checks that no answer, and no line of
// Vault's audit log, holds k₂ (learnt as k·k₁⁻¹ after splitting a known
// k) in any encoding.
func TestNoEndpointReturnsK2(t *testing.T) {
	e := start(t)
	k := randomScalar(t)
	k1, g := split(t, e, "s_v1", k)
	k2 := ristretto255.NewScalar().Multiply(k, ristretto255.NewScalar().Invert(k1))
	k2inv := ristretto255.NewScalar().Invert(k2)
	var forms []string
	for _, s := range []*ristretto255.Scalar{k2, k2inv} {
		b := s.Bytes()
		forms = append(forms, b64(b), base64.RawStdEncoding.EncodeToString(b), base64.URLEncoding.EncodeToString(b),
			base64.RawURLEncoding.EncodeToString(b), hex.EncodeToString(b), strings.ToUpper(hex.EncodeToString(b)), string(b))
	}
	root := e.Client(t)
	paths := []string{"", "multiply", "domains", "domains/", "domains/s_v1", "domains/s_v1/split", "domains/s_v1/refresh", "config", "domains/s_v1/k2", "domains/s_v1/share"}
	var bodies []string
	keep := func(resp *api.Response, err error) {
		if resp != nil {
			var buf bytes.Buffer
			_, _ = buf.ReadFrom(resp.Body)
			resp.Body.Close()
			bodies = append(bodies, buf.String())
		} else if err != nil {
			bodies = append(bodies, err.Error())
		}
	}
	ctx := context.Background()
	body := map[string]any{"generation": g + 10, "groups": []group{}}
	for _, p := range paths {
		keep(root.Logical().ReadRawWithContext(ctx, path(e, p)))
		keep(root.Logical().ReadRawWithDataWithContext(ctx, path(e, p), map[string][]string{"list": {"true"}}))
		keep(root.Logical().WriteRawWithContext(ctx, path(e, p), mustJSON(t, body)))
		if sec, err := root.Logical().JSONMergePatch(ctx, path(e, p), body); err != nil {
			bodies = append(bodies, err.Error())
		} else if sec != nil {
			raw, _ := json.Marshal(sec)
			bodies = append(bodies, string(raw))
		}
		// help
		if sec, err := root.Logical().ReadWithData(path(e, p), map[string][]string{"help": {"1"}}); err == nil && sec != nil {
			raw, _ := json.Marshal(sec)
			bodies = append(bodies, string(raw))
		}
	}
	// The OpenAPI document of the mount.
	if sec, err := root.Logical().Read("sys/internal/specs/openapi"); err == nil && sec != nil {
		raw, _ := json.Marshal(sec)
		bodies = append(bodies, string(raw))
	}
	audit, err := os.ReadFile(e.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(audit), path(e, "domains/s_v1/split")) {
		t.Error("the audit log has no record of the split")
	}
	bodies = append(bodies, string(audit))
	for i, b := range bodies {
		for _, f := range forms {
			if strings.Contains(b, f) {
				t.Fatalf("answer %d holds k₂ or k₂⁻¹", i)
			}
		}
	}
	// The delete removes the shares; the deleted domain is then unknown.
	if _, err := root.Logical().Delete(path(e, "domains/s_v1")); err != nil {
		t.Fatal(err)
	}
	rs, err := multiply(t, e, e.ServiceToken, group{Op: keyshare.OpPseudonymize, Domain: "s_v1", Generation: g, Points: points(randomPoint(t))})
	if err != nil || rs[0].Error != keyshare.ErrorUnknownDomain {
		t.Errorf("after delete: %v %+v", err, rs)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
