package keyshare

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"runtime"
	"slices"
	"sync"

	"filippo.io/edwards25519"
	"github.com/gtank/ristretto255"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/keyshare/wire"
)

// Group is one group of a multiply request (package wire).
type Group = wire.Group

// ItemError is the error of one point of a group.
type ItemError = wire.ItemError

// Result is the answer to one group, in the order of the request.
type Result = wire.Result

func decodeBase64(s string) ([]byte, error) { return base64.StdEncoding.Strict().DecodeString(s) }
func encodeBase64(b []byte) string          { return base64.StdEncoding.EncodeToString(b) }

// job is one group's decoded input and its factor.
type job struct {
	in, out []byte
	f       *ristretto255.Scalar
	errs    []ItemError
	mu      sync.Mutex
}

// factor returns what a group's points are multiplied by, or the group's
// error.
func (b *backend) factor(ctx context.Context, s logical.Storage, g *Group) (*ristretto255.Scalar, string, error) {
	key := func(name string, gen uint64) (*genKey, string, error) {
		if !keys.ValidName(name) {
			return nil, ErrorUnknownDomain, nil
		}
		l, err := b.domain(ctx, s, name)
		if err != nil {
			return nil, "", err
		}
		switch {
		case l == nil:
			return nil, ErrorUnknownDomain, nil
		case gen == l.cur.gen:
			return &l.cur, "", nil
		case l.prev != nil && gen == l.prev.gen:
			l.prevUsed.Store(b.now().UnixNano())
			return l.prev, "", nil
		}
		return nil, ErrorUnknownGeneration, nil
	}
	from, e, err := key(g.Domain, g.Generation)
	if from == nil {
		return nil, e, err
	}
	switch g.Op {
	case OpPseudonymize:
		return from.k2, "", nil
	case OpIdentify:
		return from.k2in, "", nil
	}
	to, e, err := key(g.ToDomain, g.ToGeneration)
	if to == nil {
		return nil, e, err
	}
	return ristretto255.NewScalar().Multiply(to.k2, from.k2in), "", nil
}

func (b *backend) multiply(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	c, err := b.settings(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	var in wire.Request
	raw, err := json.Marshal(req.Data)
	if err == nil {
		err = json.Unmarshal(raw, &in)
	}
	if err != nil {
		return errResponse("groups: not a list of groups")
	}
	if len(in.Groups) > c.MaxBatch {
		return errResponse("batch too large: more than %d points", c.MaxBatch)
	}
	jobs := make([]*job, len(in.Groups))
	total := 0
	for i := range in.Groups {
		g := &in.Groups[i]
		switch g.Op {
		case OpPseudonymize, OpIdentify, OpConvert:
		default:
			return errResponse("group %d: op must be pseudonymize, identify or convert", i)
		}
		p, err := decodeBase64(g.Points)
		if err != nil || len(p)%point.Size != 0 {
			return errResponse("group %d: points must be the base64 of 32-byte points", i)
		}
		if total += len(p) / point.Size; total > c.MaxBatch {
			return errResponse("batch too large: more than %d points", c.MaxBatch)
		}
		jobs[i] = &job{in: p}
	}
	results := make([]Result, len(in.Groups))
	for i := range in.Groups {
		f, e, err := b.factor(ctx, req.Storage, &in.Groups[i])
		if err != nil {
			return nil, err
		}
		if f == nil {
			results[i].Error = e
			jobs[i] = nil
			continue
		}
		jobs[i].f = f
		jobs[i].out = make([]byte, len(jobs[i].in))
	}
	run(jobs, total)
	for i, j := range jobs {
		if j == nil {
			continue
		}
		slices.SortFunc(j.errs, func(a, b ItemError) int { return a.Index - b.Index })
		results[i].Points = encodeBase64(j.out)
		results[i].Errors = j.errs
	}
	list := make([]any, len(results))
	for i := range results {
		m := map[string]any{}
		if results[i].Error != "" {
			m["error"] = results[i].Error
		} else {
			m["points"] = results[i].Points
			if len(results[i].Errors) > 0 {
				errs := make([]any, len(results[i].Errors))
				for k, e := range results[i].Errors {
					errs[k] = map[string]any{"index": e.Index, "error": e.Error}
				}
				m["errors"] = errs
			}
		}
		list[i] = m
	}
	return &logical.Response{Data: map[string]any{"results": list}}, nil
}

// minChunk is the least number of points worth a goroutine of their own.
const minChunk = 32

// run multiplies the points of every job, spread over the cores when
// there are enough of them. A panic fails the points of its chunk only.
func run(jobs []*job, total int) {
	type span struct {
		j      *job
		lo, hi int
	}
	w := max(1, min(runtime.GOMAXPROCS(0), total/minChunk))
	size := (total + w - 1) / w
	var spans [][]span
	var cur []span
	n := 0
	for _, j := range jobs {
		if j == nil {
			continue
		}
		items := len(j.in) / point.Size
		for lo := 0; lo < items; {
			hi := min(items, lo+size-n)
			cur = append(cur, span{j, lo, hi})
			n += hi - lo
			lo = hi
			if n == size {
				spans, cur, n = append(spans, cur), nil, 0
			}
		}
	}
	if len(cur) > 0 {
		spans = append(spans, cur)
	}
	do := func(ss []span) {
		for _, s := range ss {
			func() {
				defer func() {
					if recover() != nil {
						s.j.mu.Lock()
						for i := s.lo; i < s.hi; i++ {
							s.j.errs = append(s.j.errs, ItemError{Index: i, Error: ErrorInternal})
						}
						s.j.mu.Unlock()
					}
				}()
				multiplySpan(s.j, s.lo, s.hi)
			}()
		}
	}
	if len(spans) <= 1 {
		for _, ss := range spans {
			do(ss)
		}
		return
	}
	var wg sync.WaitGroup
	for _, ss := range spans {
		wg.Go(func() { do(ss) })
	}
	wg.Wait()
}

func multiplySpan(j *job, lo, hi int) {
	// As the service does (pseudonymizer, point.EncodeDoubled): multiply by
	// half the factor and encode the doubles together, one field inversion
	// for the span instead of an inverse square root per point.
	half := point.HalfScalar(point.EdwardsScalar(j.f))
	dst := make([][]byte, 0, hi-lo)
	pts := make([]*edwards25519.Point, 0, hi-lo)
	for i := lo; i < hi; i++ {
		X, err := point.DecodeEdwards(j.in[i*point.Size : (i+1)*point.Size])
		if err != nil {
			j.mu.Lock()
			j.errs = append(j.errs, ItemError{Index: i, Error: ErrorInvalidPoint})
			j.mu.Unlock()
			continue
		}
		dst = append(dst, j.out[i*point.Size:(i+1)*point.Size])
		pts = append(pts, X.ScalarMult(half, X))
	}
	point.EncodeDoubled(dst, pts)
}
