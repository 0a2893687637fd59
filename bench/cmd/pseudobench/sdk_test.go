package main

import (
	"context"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/ehealth-pseudo/pseudonymizer/identifier"
)

// TestSDK drives the client SDK, without and with its cache, against a
// server of this process reached by -addr (so that pseudobench reports its
// CPU time: here both sides', which the test does not look at). Structure
// only, no timing thresholds.
func TestSDK(t *testing.T) {
	srv, err := startInProcess(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.stop)
	r, stdout := runJSON(t, "-addr", srv.addr, "-metrics", srv.metricsURL,
		"-runs", "sdk-pseudonymize:1x1,sdk-pseudonymize:5x2,sdk-cached:1x20", "-sdk-ids", "50", "-sdk-repeat", "0.8")
	checkRuns(t, r, 3)
	if !slices.Equal(r.Target.Ops, []string{opSDK, opSDKCached}) {
		t.Errorf("ops = %v", r.Target.Ops)
	}
	for i, x := range r.Runs {
		s := x.SDK
		if s == nil {
			t.Fatalf("%s: no sdk result", x.Name)
		}
		if s.Kind != "niss" || s.Cache != (i == 2) || s.Calls < x.Calls || s.Items != s.Calls*uint64(x.Batch) {
			t.Errorf("%s: %+v", x.Name, s)
		}
		if s.ClientCPUNote != "" || s.ClientCPUNsPerItem <= 0 || s.ClientCPUXScalarMult <= 0 || s.ClientCPUDistinctXScalarMult < s.ClientCPUXScalarMult ||
			!near(s.ClientCPUCallXScalarMult, s.ClientCPUXScalarMult*float64(x.Batch)) {
			t.Errorf("%s: client CPU %+v", x.Name, s)
		}
		if s.CryptoNsPerItem <= 0 || s.CryptoXScalarMult <= 0 || x.ServerCPUXScalarMult <= 0 {
			t.Errorf("%s: crypto %v×SM, server %v×SM", x.Name, s.CryptoXScalarMult, x.ServerCPUXScalarMult)
		}
		if s.CacheHits+s.Merged+s.ServerItems < s.Items || s.ServerItems < s.DistinctItems || s.ServerItems > s.Items || s.ServerCalls == 0 {
			t.Errorf("%s: items %d = hits %d + merged %d + server %d; distinct %d", x.Name, s.Items, s.CacheHits, s.Merged, s.ServerItems, s.DistinctItems)
		}
	}
	for _, x := range r.Runs[:2] {
		s := x.SDK
		if s.DistinctItems != s.Items || s.ServerItems != s.Items || s.ServerCalls != s.Calls || s.HitRate != 0 || s.Merged != 0 || s.WorkingSet != 0 {
			t.Errorf("%s without the cache: %+v", x.Name, s)
		}
	}
	c := r.Runs[2].SDK
	if c.WorkingSet != 50 || c.RepeatShare != 0.8 || c.LocalShare <= 0 || c.DistinctItems >= c.Items ||
		!near(c.HitRate, float64(c.CacheHits)/float64(c.Items)) || !near(c.LocalShare, float64(c.CacheHits+c.Merged)/float64(c.Items)) {
		t.Errorf("cached: %+v", c)
	}
	for _, want := range []string{"client SDK (client.Client", "sdk-cached b1 c20", "sdk-pseudonymize b5 c2", "blind+unblind"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
}

func near(a, b float64) bool { return a-b < 1e-9*max(a, b, 1) && b-a < 1e-9*max(a, b, 1) }

// TestSDKInProcess: with the server in pseudobench's process, the client's
// CPU time is not reported, the rest is.
func TestSDKInProcess(t *testing.T) {
	r, stdout := runJSON(t, "-inprocess", "-op", "sdk-cached", "-runs", "1x4", "-sdk-kind", "raw")
	checkRuns(t, r, 1)
	s := r.Runs[0].SDK
	if s == nil || s.Kind != "raw" || !s.Cache || s.ClientCPUNote == "" || s.ClientCPUNsPerItem != 0 || s.ClientCPUXScalarMult != 0 || s.CryptoXScalarMult <= 0 {
		t.Errorf("sdk = %+v", s)
	}
	if !strings.Contains(stdout, "client CPU not measured: -inprocess") {
		t.Errorf("output:\n%s", stdout)
	}
}

// TestTestIdentifiers: the NISS numbers are valid and distinct, and
// normalize to their digits; the raw ones are distinct.
func TestTestIdentifiers(t *testing.T) {
	seen := map[string]bool{}
	ks := []uint64{998, 999, 1000, 999 * 28, 999 * 12 * 28, nissDates*999 - 1}
	for k := range uint64(3000) {
		ks = append(ks, k)
	}
	for _, k := range ks {
		text := appendNISS(nil, kindNISS, k)
		id, err := identifier.NISS(string(text))
		if err != nil || len(text) != len("85.07.30-033.28") {
			t.Fatalf("NISS %d: %q: %v", k, text, err)
		}
		if n, _ := normalize(kindNISS, text); string(n) != string(id) || identifier.FormatNISS(id) != string(text) {
			t.Errorf("NISS %d: %q normalizes to %q", k, text, n)
		}
		seen[string(id)] = true
	}
	if len(seen) != 3000+3 { // the three large values of k, and the first 3000
		t.Errorf("%d distinct NISS out of %d", len(seen), len(ks))
	}
	if string(appendNISS(nil, kindNISS, 0)) != "00.01.01-001.73" {
		t.Errorf("NISS 0 = %s", appendNISS(nil, kindNISS, 0))
	}
	if raw, err := normalize(kindRaw, appendNISS(nil, kindRaw, 42)); err != nil || string(raw) != "pseudobench-42" {
		t.Errorf("raw 42 = %q, %v", raw, err)
	}
}

// TestSDKDraw: without the cache every identifier is new; with it, repeats
// come from the last -sdk-ids new ones, and say whether they were answered.
func TestSDKDraw(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	r := newSDKRun(nil, opSDK, "d", kindNISS, 10, 0.5)
	for want := range uint64(5) {
		if n, hit := r.draw(rng); n != want || hit {
			t.Fatalf("draw %d = %d, %v", want, n, hit)
		}
	}
	r = newSDKRun(nil, opSDKCached, "d", kindNISS, 10, 0.5)
	repeats, hits := 0, 0
	var prev []uint64
	for i := range 1000 {
		fresh := r.distinct()
		n, hit := r.draw(rng)
		if n < fresh {
			repeats++
			if n+10 < fresh {
				t.Fatalf("draw %d: %d is not among the last 10 of %d", i, n, fresh)
			}
			if hit {
				hits++
				if !slices.Contains(prev, n) {
					t.Fatalf("draw %d: %d was never answered", i, n)
				}
			}
		} else if n != fresh || hit {
			t.Fatalf("draw %d: new identifier %d (%v), want %d", i, n, hit, fresh)
		}
		if i%2 == 0 { // answer every other call
			r.done([]uint64{n})
			prev = append(prev, n)
		}
	}
	if repeats < 400 || repeats > 600 || hits == 0 || hits == repeats {
		t.Errorf("%d repeats (%d answered) of 1000 draws at 0.5", repeats, hits)
	}
}

func TestSDKUsage(t *testing.T) {
	for _, args := range [][]string{
		{"-sdk-kind", "email"},
		{"-sdk-ids", "0"},
		{"-sdk-repeat", "1"},
		{"-sdk-repeat", "-0.1"},
		{"-runs", "sdk-nope:1x1"},
		{"-op", "sdk"},
		{"-runs", "sdk-cached:2000000x1"},
	} {
		if _, err := parseConfig(args, io.Discard); err == nil {
			t.Errorf("parseConfig(%q) accepted", args)
		}
	}
	// The SDK draws its own identifiers: -points does not bound its batches.
	c, err := parseConfig([]string{"-runs", "sdk-pseudonymize:1000x1,sdk-cached:1x100", "-points", "64"}, io.Discard)
	if err != nil || len(c.runs) != 2 || c.runs[1] != (runSpec{op: opSDKCached, batch: 1, concurrency: 100}) {
		t.Errorf("runs = %+v, %v", c.runs, err)
	}
	if c.sdkKind != "niss" || c.sdkIDs != 1000 || c.sdkRepeat != 0.5 {
		t.Errorf("defaults: %q %d %v", c.sdkKind, c.sdkIDs, c.sdkRepeat)
	}
}
