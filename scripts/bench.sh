#!/usr/bin/env bash
# bench.sh measures the service and writes bench/results/: latest.json (all
# numbers and the targets of the performance issue), latest.md (tables) and
# throughput.png (chart). It needs only Go. docs/benchmarks.md explains it.
#
# It builds cmd/pseudonymizer and, in the bench/ module, cmd/pseudobench,
# cmd/compare and cmd/report. It starts the server in development mode (its
# own temporary key file, plaintext on free loopback ports, no rate limit),
# waits until it is healthy, runs the standard matrix with pseudobench (the
# gRPC load generator), stops the server, runs the crypto comparison with
# circl (compare) and renders the report (report).
#
# Environment (all optional):
#   BENCH_DURATION      measured time of each gRPC run (default 5s)
#   BENCH_RUNS          matrix, BATCHxCALLERS,... (default below)
#   BENCH_LOAD          fractions of the best unary throughput for the
#                       open-loop latency runs (default 0.5)
#   BENCH_SERVER_FLAGS  extra flags for cmd/pseudonymizer
#   BENCH_PROFILE=1     also profile an in-process server (results/cpu-*.pprof,
#                       with the binary results/pseudobench.bin)
#   BENCH_OUT           results directory (default bench/results)
# Takes about 2 minutes with the defaults, plus the first builds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

DURATION="${BENCH_DURATION:-5s}"
RUNS="${BENCH_RUNS:-1x1,1x2,1x4,1x8,10x2,10x4,100x2,100x4,1000x2,1000x4}"
LOAD="${BENCH_LOAD:-0.5}"
OUT="${BENCH_OUT:-$ROOT/bench/results}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

step() { printf '\n== %s\n' "$*"; }

TMP="$(mktemp -d "${TMPDIR:-/tmp}/pseudobench.XXXXXX")"
SERVER_PID=""
cleanup() {
	if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
		kill "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT

step "build"
go build -o "$TMP/pseudonymizer" ./cmd/pseudonymizer
(cd bench && go build -o "$TMP/" ./cmd/pseudobench ./cmd/compare ./cmd/report)

step "start the server (development mode, free loopback ports)"
# Audit records stay on (info level), as in production; they go to a file.
# shellcheck disable=SC2086
"$TMP/pseudonymizer" -dev -data-dir "$TMP/data" -listen 127.0.0.1:0 -metrics-listen 127.0.0.1:0 \
	-rate 0 ${BENCH_SERVER_FLAGS:-} >"$TMP/server.out" 2>"$TMP/server.log" &
SERVER_PID=$!
ADDR="" METRICS=""
for _ in $(seq 1 300); do
	ADDR="$(sed -n 's/^pseudonymizer: serving gRPC on \([^ ]*\).*/\1/p' "$TMP/server.out")"
	METRICS="$(sed -n 's/^pseudonymizer: serving metrics on \([^ ]*\).*/\1/p' "$TMP/server.out")"
	if [ -n "$ADDR" ] && [ -n "$METRICS" ]; then break; fi
	if ! kill -0 "$SERVER_PID" 2>/dev/null; then
		echo "the server exited:"; tail -20 "$TMP/server.log"; exit 1
	fi
	sleep 0.1
done
if [ -z "$ADDR" ] || [ -z "$METRICS" ]; then
	echo "the server did not print its addresses in 30 s:"; tail -20 "$TMP/server.log"; exit 1
fi
echo "gRPC $ADDR, metrics $METRICS (pid $SERVER_PID)"

step "gRPC load: $RUNS, $DURATION each, then p99 at ${LOAD} of the best unary throughput"
uptime || true
status=0
"$TMP/pseudobench" -addr "$ADDR" -metrics "$METRICS" -wait 30s \
	-runs "$RUNS" -load "$LOAD" -load-batch 1 -duration "$DURATION" \
	-json "$TMP/grpc.json" || status=$?
if [ ! -s "$TMP/grpc.json" ]; then
	echo "pseudobench failed (status $status):"; tail -20 "$TMP/server.log"; exit 1
fi
[ "$status" -eq 0 ] || echo "warning: pseudobench reported failures (status $status): see the errors column"

step "stop the server"
kill "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=""

step "crypto comparison with circl (same process)"
"$TMP/compare" -json "$TMP/compare.json"

if [ "${BENCH_PROFILE:-0}" = 1 ]; then
	step "CPU profiles of an in-process server"
	# The generator's goroutines carry the label pseudobench=generator:
	# -tagignore leaves the server's side (and the garbage collector).
	cp "$TMP/pseudobench" "$OUT/pseudobench.bin"
	for run in 1x8 100x2; do
		"$TMP/pseudobench" -inprocess -q -runs "$run" -duration "$DURATION" -cpuprofile "$OUT/cpu-$run.pprof"
		go tool pprof -tagignore pseudobench=generator -top -nodecount=20 "$OUT/pseudobench.bin" "$OUT/cpu-$run.pprof" 2>/dev/null | sed -n '5,30p'
	done
	echo "explore: go tool pprof -tagignore pseudobench=generator -http : $OUT/pseudobench.bin $OUT/cpu-1x8.pprof"
fi

step "report"
"$TMP/report" -grpc "$TMP/grpc.json" -compare "$TMP/compare.json" \
	-json "$OUT/latest.json" -md "$OUT/latest.md" -chart "$OUT/throughput.png"
uptime || true
echo
echo "wrote $OUT/latest.json, $OUT/latest.md and $OUT/throughput.png"
exit "$status"
