package vault

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gtank/ristretto255"

	"github.com/ehealth-pseudo/pseudonymizer/internal/scalarmult"
	"github.com/ehealth-pseudo/pseudonymizer/internal/sharetest"
	"github.com/ehealth-pseudo/pseudonymizer/internal/vaulttest"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
)

// processCPU is the CPU time of this process so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTick is the unit of /proc/<pid>/stat's times (USER_HZ, 100 on
// Linux).
const clockTick = 10 * time.Millisecond

// otherCPU is the CPU time (user + system) of the processes pids so far,
// from /proc/<pid>/stat.
func otherCPU(b *testing.B, pids ...int) time.Duration {
	var sum time.Duration
	for _, pid := range pids {
		raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil {
			b.Fatal(err)
		}
		// The command name, in parentheses, may hold spaces: fields count
		// from its closing parenthesis; utime and stime are fields 14 and 15.
		i := bytes.LastIndexByte(raw, ')')
		if i < 0 {
			b.Fatalf("/proc/%d/stat: no command name", pid)
		}
		f := bytes.Fields(raw[i+1:])
		if len(f) < 13 {
			b.Fatalf("/proc/%d/stat: %d fields", pid, len(f))
		}
		for _, s := range f[11:13] {
			v, err := strconv.ParseInt(string(s), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			sum += time.Duration(v) * clockTick
		}
	}
	return sum
}

// BenchmarkSharesMultiply is the plugin hop of a split domain: round
// trips of 1 and of 100 points, one at a time, through Shares to a real
// Vault (with its audit device) and the real plugin. Per point, in
// ScalarMults timed right after: "client-x-sm" is this process's CPU
// (JSON, base64, HTTP: the service's side of the hop), "vault-x-sm"
// Vault's and "plugin-x-sm" the plugin process's (their CPU time in
// /proc, in clock ticks: run with -benchtime of a second or more). ns/op
// of points=1 is the hop's latency with every process awake; method=put
// sends PUT, as before decision 25.
func BenchmarkSharesMultiply(b *testing.B) {
	e := sharetest.Start(b)
	ctx := context.Background()
	splitDomain(b, e, "bench_v1")
	shares, ref := serviceShares(b, e, "bench_v1", SharesOptions{})
	g := ristretto255.NewGeneratorElement().Bytes()
	// A first round trip starts the plugin process.
	first, errs := [][]byte{bytes.Clone(g)}, []error{nil}
	if shares.Multiply(ctx, keys.SharePseudonymize, ref, keys.ShareRef{}, first, errs); errs[0] != nil {
		b.Fatal(errs[0])
	}
	plugin := vaulttest.Processes(b, filepath.Join(e.PluginDir(), filepath.Base(e.Plugin)))
	vault := e.Pid()
	if len(plugin) == 0 || vault == 0 {
		b.Fatal("no plugin or Vault process")
	}
	// The floor of any round trip: Vault's own request path, with the
	// same token and audit device, to the plugin without a multiplication
	// (a domain's metadata) and without the plugin (the token's lookup).
	svc := e.ClientWithToken(b, e.ServiceToken)
	for _, f := range []struct{ name, path string }{
		{"floor=plugin-read", e.SharesMount + "/domains/bench_v1"},
		{"floor=token-lookup", "auth/token/lookup-self"},
	} {
		b.Run(f.name, func(b *testing.B) {
			client, vaultCPU, pluginCPU := processCPU(b), otherCPU(b, vault), otherCPU(b, plugin...)
			for b.Loop() {
				resp, err := svc.Logical().ReadRawWithContext(ctx, f.path)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
			}
			client, vaultCPU, pluginCPU = processCPU(b)-client, otherCPU(b, vault)-vaultCPU, otherCPU(b, plugin...)-pluginCPU
			reportCPU(b, 1, client, vaultCPU, pluginCPU)
		})
	}
	// The same with PUT, as before decision 25 (Vault asks the plugin
	// whether the resource exists first).
	put, _ := serviceShares(b, e, "bench_v1", SharesOptions{})
	put.put.Store(true)
	for _, c := range []struct {
		name   string
		n      int
		shares *Shares
	}{{"points=1", 1, shares}, {"points=100", 100, shares}, {"points=1,method=put", 1, put}} {
		n, shares := c.n, c.shares
		b.Run(c.name, func(b *testing.B) {
			pts, errs := make([][]byte, n), make([]error, n)
			client, vaultCPU, pluginCPU := processCPU(b), otherCPU(b, vault), otherCPU(b, plugin...)
			for b.Loop() {
				for i := range pts {
					pts[i], errs[i] = append(pts[i][:0], g...), nil
				}
				shares.Multiply(ctx, keys.SharePseudonymize, ref, keys.ShareRef{}, pts, errs)
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			client, vaultCPU, pluginCPU = processCPU(b)-client, otherCPU(b, vault)-vaultCPU, otherCPU(b, plugin...)-pluginCPU
			reportCPU(b, n, client, vaultCPU, pluginCPU)
		})
	}
}

// reportCPU reports the CPU times of b's loop per point (n per operation)
// in ScalarMults timed right after.
func reportCPU(b *testing.B, n int, client, vault, plugin time.Duration) {
	rounds, round := 5, 200*time.Millisecond
	if b.N == 1 {
		rounds, round = 1, time.Millisecond
	}
	per := float64(b.N*n) * float64(scalarmult.Median(rounds, round))
	b.ReportMetric(float64(client)/per, "client-x-sm/point")
	b.ReportMetric(float64(vault)/per, "vault-x-sm/point")
	b.ReportMetric(float64(plugin)/per, "plugin-x-sm/point")
}
