#!/usr/bin/env bash
# bench.sh measures the service and writes bench/results/: latest.json (all
# numbers and the targets of the performance issue), latest.md (tables) and
# throughput.png (chart). It needs only Go (and taskset, from util-linux, to
# pin). docs/benchmarks.md explains it.
#
# It builds cmd/pseudonymizer, cmd/pseudoctl and, in the bench/ module,
# cmd/pseudobench, cmd/compare and cmd/report. It makes a key file with the
# demo domain demo_v1 and its next version demo_v2 (into which demo_v1's
# owner, demo-owner, may convert), starts the server on it in development
# mode (plaintext on free loopback ports, no rate limit), waits until it is
# healthy, runs pseudobench (the gRPC load generator): the pseudonymize
# matrix with an open-loop run at half load, every other operation (identify,
# convert, and the three streams, 1-item and 100-item messages), the client
# SDK (client.Client: 1-item and 100-item calls without its cache, and 100
# callers through its cache), the prescription mix with the search of the
# highest rate whose p99 stays within 5 ms, and an optional soak; stops the
# server, runs the crypto comparison with circl (compare) and renders the
# report (report).
#
# When pinned, pseudobench has its CPU to itself: its process CPU time in
# the client SDK runs is the client's, reported per item in ScalarMults
# next to the server's.
#
# Pinned measurement is the reference: by default the server runs on CPU
# BENCH_SERVER_CPU and pseudobench on CPU BENCH_GEN_CPU (taskset), so that
# the generator does not take the server's cores, and every ratio is to the
# server's cores (pseudobench -cores). Where it cannot pin (no taskset, fewer
# than 2 CPUs, CPUs not allowed), it says so and runs unpinned. The mode is
# recorded in the JSON (pinning) and in every table and chart title.
#
# Environment (all optional):
#   BENCH_PIN           1 (default): pin; 0: the old unpinned mode, server
#                       and generator on all CPUs, ceiling for all of them
#   BENCH_SERVER_CPU    CPU list of the server when pinned (default 0)
#   BENCH_GEN_CPU       CPU list of pseudobench when pinned (default 1)
#   BENCH_DURATION      measured time of each gRPC run, and of each step of
#                       the mix search (default 5s)
#   BENCH_RUNS          pseudonymize matrix, BATCHxCALLERS,... (default below)
#   BENCH_LOAD          fractions of the best unary throughput for the
#                       open-loop latency runs (default 0.5)
#   BENCH_OPS           the other operations, comma-separated (default
#                       identify,convert,pseudonymize-stream,identify-stream,
#                       convert-stream; empty for none)
#   BENCH_OPS_RUNS      their runs, BATCHxCALLERS,... (default 1x4,100x2)
#   BENCH_SDK_RUNS      client SDK runs, OP:BATCHxCALLERS,... (default
#                       sdk-pseudonymize:1x1,sdk-pseudonymize:100x1,
#                       sdk-cached:1x100; empty for none; the draw of
#                       sdk-cached: -sdk-ids, -sdk-repeat in
#                       BENCH_PSEUDOBENCH_FLAGS)
#   BENCH_MIX           1 (default): the prescription mix search; 0: none
#   BENCH_SOAK          soak duration (e.g. 10m; default none)
#   BENCH_PSEUDOBENCH_FLAGS  extra flags for pseudobench (e.g. -mix-steps 8
#                       -soak-sample 10s)
#   BENCH_SERVER_FLAGS  extra flags for cmd/pseudonymizer
#   BENCH_PROFILE=1     also profile an in-process server (results/cpu-*.pprof,
#                       with the binary results/pseudobench.bin)
#   BENCH_OUT           results directory (default bench/results)
# Takes about 4 minutes with the defaults, plus the first builds and the soak.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

DURATION="${BENCH_DURATION:-5s}"
RUNS="${BENCH_RUNS:-1x1,1x2,1x4,1x8,10x2,10x4,100x2,100x4,1000x2,1000x4}"
LOAD="${BENCH_LOAD:-0.5}"
OPS="${BENCH_OPS-identify,convert,pseudonymize-stream,identify-stream,convert-stream}"
OPS_RUNS="${BENCH_OPS_RUNS:-1x4,100x2}"
SDK_RUNS="${BENCH_SDK_RUNS-sdk-pseudonymize:1x1,sdk-pseudonymize:100x1,sdk-cached:1x100}"
MIX="${BENCH_MIX:-1}"
SOAK="${BENCH_SOAK:-}"
PIN="${BENCH_PIN:-1}"
SERVER_CPU="${BENCH_SERVER_CPU:-0}"
GEN_CPU="${BENCH_GEN_CPU:-1}"
OUT="${BENCH_OUT:-$ROOT/bench/results}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

step() { printf '\n== %s\n' "$*"; }

# Where the server and the generator run. env and taskset both exec the
# program, so that $! is the server's own process id.
# shellcheck source=scripts/pinning.sh
. scripts/pinning.sh
pin_cpus "server"
echo "mode: $PINNING; ceiling for $CORES server core(s)"

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
go build -o "$TMP/" ./cmd/pseudonymizer ./cmd/pseudoctl
(cd bench && go build -o "$TMP/" ./cmd/pseudobench ./cmd/compare ./cmd/report)

step "key file: demo_v1 (as the -dev server makes it) and demo_v2, its next version"
STORE="file:$TMP/data/keys.json"
"$TMP/pseudoctl" -store "$STORE" domain create demo_v1 -audience urn:pseudonymizer:demo:v1 \
	-pseudonymize '*' -identify '*' -owners demo-owner
"$TMP/pseudoctl" -store "$STORE" domain new-version demo_v1 demo_v2

step "start the server (development mode, free loopback ports; $PINNING)"
# Audit records stay on (info level), as in production; they go to a file.
# shellcheck disable=SC2086
"${SERVER_ON[@]}" "$TMP/pseudonymizer" -dev -data-dir "$TMP/data" -listen 127.0.0.1:0 -metrics-listen 127.0.0.1:0 \
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
echo "gRPC $ADDR, metrics $METRICS (pid $SERVER_PID, CPUs $(taskset -pc "$SERVER_PID" 2>/dev/null | sed 's/.*: //' || echo unknown))"

# The pseudonymize matrix, then each other operation's runs, then the
# client SDK's.
runs="$RUNS"
IFS=, read -r -a ops <<<"$OPS"
IFS=, read -r -a opruns <<<"$OPS_RUNS"
for op in ${ops[@]+"${ops[@]}"}; do
	for r in "${opruns[@]}"; do runs="$runs,$op:$r"; done
done
if [ -n "$SDK_RUNS" ]; then runs="$runs,$SDK_RUNS"; fi
args=(-addr "$ADDR" -metrics "$METRICS" -wait 30s -cores "$CORES" -pinning "$PINNING"
	-op pseudonymize -runs "$runs" -load "$LOAD" -load-batch 1 -duration "$DURATION" -json "$TMP/grpc.json")
what="runs $runs, $DURATION each, then p99 at ${LOAD} of the best unary throughput"
if [ "$MIX" = 1 ]; then
	args+=(-mix)
	what="$what; the prescription mix search"
fi
if [ -n "$SOAK" ]; then
	args+=(-soak "$SOAK")
	what="$what; a $SOAK soak"
fi
step "gRPC load ($PINNING): $what"
uptime || true
status=0
# shellcheck disable=SC2086
"${GEN_ON[@]}" "$TMP/pseudobench" "${args[@]}" ${BENCH_PSEUDOBENCH_FLAGS:-} || status=$?
if [ ! -s "$TMP/grpc.json" ]; then
	echo "pseudobench failed (status $status):"; tail -20 "$TMP/server.log"; exit 1
fi
[ "$status" -eq 0 ] || echo "warning: pseudobench reported failures (status $status): see the errors column"

step "stop the server"
kill "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=""

step "crypto comparison with circl (same process, on the server's CPUs)"
"${SERVER_ON[@]}" "$TMP/compare" -json "$TMP/compare.json"

if [ "${BENCH_PROFILE:-0}" = 1 ]; then
	step "CPU profiles of an in-process server (unpinned: server and generator in one process)"
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
echo "mode: $PINNING"
echo "wrote $OUT/latest.json, $OUT/latest.md and $OUT/throughput.png"
exit "$status"
