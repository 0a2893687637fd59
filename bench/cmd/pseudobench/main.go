// Command pseudobench measures a running pseudonymization service over gRPC
// and expresses its throughput as a ratio to the cost of one ristretto255
// ScalarMult measured on the same machine in the same run.
//
// It sends pre-blinded points (made before the timed phase, so that its own
// cryptography does not compete with the server for CPU), and for identify
// and convert transit pseudonyms made from them through the service, in
// batches of the given sizes from the given number of concurrent callers,
// as unary calls or as messages on one bidirectional stream per caller,
// either as fast as the server answers (closed loop) or at a target rate
// (open loop, for latency at a given load). For each run it prints the
// throughput in items per second, the latency percentiles of a call, the
// errors, the server's resident memory and CPU time, and the throughput as
// a fraction of the ceiling cores ÷ ScalarMult: the rate at which the
// server's cores could do nothing but the one scalar multiplication that
// each item needs.
//
// The operations sdk-pseudonymize and sdk-cached instead drive the client
// SDK (client.Client over the same connections, its transit cache off or
// on): pseudobench then blinds and unblinds, and reports its own CPU time
// per item (the client's, when the server is another process) next to the
// server's, with the cache's hits and the calls that reached the server.
//
// -mix drives the prescription traffic mix (Poisson arrivals, 1–3 items,
// 80 % pseudonymize, 20 % identify) and searches the highest rate whose p99
// stays within 5 ms; -soak holds a steady rate for minutes and reports the
// drift of the server's RSS and goroutines.
//
//	go -C bench run ./cmd/pseudobench -addr 127.0.0.1:50051 -metrics http://127.0.0.1:9090/metrics
//	go -C bench run ./cmd/pseudobench -inprocess -op identify,convert-stream -runs 1x4,100x2
//	go -C bench run ./cmd/pseudobench -inprocess -cpuprofile /tmp/cpu.out
//
// It lives in the bench module (like cmd/compare and cmd/report, which
// read its -json output), not among the product's commands.
// scripts/bench.sh runs the standard set, with the server and pseudobench
// pinned to separate CPUs; docs/benchmarks.md explains every number.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "pseudobench: %v (see -h)\n", err)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "pseudobench: %v\n", err)
		os.Exit(1)
	}
}
