package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/gtank/ristretto255"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/internal/point"
)

// benchResult is what sdk/typescript/test/bench.js measures, measured the
// same way in Go: CPU nanoseconds (user + system) per item, the least of
// three rounds.
type benchResult struct {
	Go                     string  `json:"go"`
	BlindUnblindNsPerItem  float64 `json:"blindUnblindNsPerItem"`
	BlindUnblindBatch100Ns float64 `json:"blindUnblindBatch100NsPerItem"`
	ScalarMultNs           float64 `json:"scalarMultNs"`
}

// bench measures the client's share of a pseudonymize in Go (encode, blind,
// unblind a service answer with its transitInfo header check) and one
// scalar multiplication, as test/bench.js does in Node.
func bench(seconds float64, goVersion string) (*benchResult, error) {
	k, err := point.RandomScalar(nil)
	if err != nil {
		return nil, err
	}
	s, _ := point.RandomScalar(nil)
	id := []byte("85073003328")
	blinded, _, err := client.Blind(id)
	if err != nil {
		return nil, err
	}
	B, _ := point.Decode(blinded)
	Y := ristretto255.NewIdentityElement().ScalarMult(ristretto255.NewScalar().Multiply(s, k), B).Bytes()
	hdr := `{"alg":"dir","enc":"A256GCM","kid":"t1","aud":"urn:pseudonymizer:demo:v1","iat":1767225600,"exp":1767225900}`
	info := base64.RawURLEncoding.EncodeToString([]byte(hdr)) + ".." + string(bytes.Repeat([]byte("A"), 16)) + "." +
		string(bytes.Repeat([]byte("B"), 75)) + "." + string(bytes.Repeat([]byte("C"), 22))

	var failed error
	one := func() {
		_, u, err := client.Blind(id)
		if err == nil {
			_, err = u.Unblind(Y, info)
		}
		if err != nil {
			failed = err
		}
	}
	ids := make([][]byte, 100)
	ys := make([][]byte, 100)
	infos := make([]string, 100)
	for i := range ids {
		ids[i] = fmt.Appendf(nil, "8507300%04d", i)
		ys[i], infos[i] = Y, info
	}
	batch := func() {
		_, bu, _ := client.BlindBatch(ids)
		if _, errs := bu.UnblindBatch(ys, infos); errs[0] != nil {
			failed = errs[0]
		}
	}
	P := ristretto255.NewGeneratorElement()
	mult := func() { P.ScalarMult(s, P) }

	r := &benchResult{
		Go:                     goVersion,
		BlindUnblindNsPerItem:  measure(one, 1, seconds),
		BlindUnblindBatch100Ns: measure(batch, 100, seconds),
		ScalarMultNs:           measure(mult, 1, seconds),
	}
	return r, failed
}

// measure runs f (which handles items items) for about seconds, after a
// warm-up, in three rounds, and returns the least CPU ns per item.
func measure(f func(), items int, seconds float64) float64 {
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		f()
	}
	best := 0.0
	for round := range 3 {
		n := 0
		c0 := cpuNs()
		for end := time.Now().Add(time.Duration(seconds / 3 * float64(time.Second))); time.Now().Before(end); n++ {
			f()
		}
		per := float64(cpuNs()-c0) / float64(n) / float64(items)
		if round == 0 || per < best {
			best = per
		}
	}
	return best
}
