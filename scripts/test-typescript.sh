#!/usr/bin/env bash
# test-typescript.sh tests the TypeScript SDK (sdk/typescript), as a step of
# scripts/test.sh or alone:
#
#   1. npm ci (exactly the lockfile), tsc build, unit and vector tests
#      (node --test; every value of pseudonymizer/testdata/vectors.json);
#   2. builds cmd/pseudonymizer and the Go interop helper
#      (sdk/typescript/test/gointerop);
#   3. integration: the built server in development mode with its REST
#      gateway on loopback, interop both ways with the Go owner and client
#      SDKs, and the browser test in Debian's Chromium (headless, driven by
#      playwright-core, which downloads no browser).
#
# Chromium: $CHROMIUM_BIN, else /usr/lib/chromium/chromium; when missing it
# is installed with apt-get (as root: CI runs on fresh machines), else the
# script fails saying so. It never skips the browser test.
#
# TS_BENCH=1 also measures the client's CPU per item (encode, blind,
# unblind a service answer) in Node (test/bench.js) and, the same way, in Go
# (gointerop bench), in the same run, and prints the ratio (README,
# "TypeScript SDK"), then the Go benchmarks BenchmarkClientBlindUnblind* and
# BenchmarkScalarMult for reference.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SDK="$ROOT/sdk/typescript"

step() { printf '\n== %s\n' "$*"; }

for tool in node npm go; do
	if ! command -v "$tool" >/dev/null; then
		echo "test-typescript.sh: $tool is not installed (Node 20+ and npm are needed for sdk/typescript)"; exit 1
	fi
done
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
	echo "test-typescript.sh: Node $(node --version) is too old: the SDK needs Node 20 or later"; exit 1
fi

step "Chromium for the browser test"
find_chromium() {
	for c in "${CHROMIUM_BIN:-}" /usr/lib/chromium/chromium; do
		if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
	done
	return 1
}
if ! CHROMIUM="$(find_chromium)"; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "Chromium is missing: installing Debian's chromium package"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq chromium >/dev/null
	fi
	if ! CHROMIUM="$(find_chromium)"; then
		echo "test-typescript.sh: Chromium not found and not installable here."
		echo "Install Debian's chromium package (apt-get install chromium) or set CHROMIUM_BIN to a Chromium binary."
		exit 1
	fi
fi
echo "$CHROMIUM ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"

step "sdk/typescript: npm ci (from the lockfile), build, unit and vector tests"
(cd "$SDK" && npm ci --prefer-offline --no-audit --no-fund && npm run build && npm test)

step "Go binaries for the integration tests"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/pseudonymizer" ./cmd/pseudonymizer
go build -o "$tmp/gointerop" ./sdk/typescript/test/gointerop
echo "built into $tmp"

step "sdk/typescript: integration (built server, REST gateway, Go SDK interop, Chromium)"
(cd "$SDK" && PSEUDONYMIZER_BIN="$tmp/pseudonymizer" GOINTEROP_BIN="$tmp/gointerop" CHROMIUM_BIN="$CHROMIUM" npm run test:integration)

if [ "${TS_BENCH:-}" = 1 ]; then
	step "CPU per item of the client's blind + unblind: Node vs Go (one run)"
	# The same measurement in both (test/bench.js, gointerop bench): CPU time
	# of encode + blind + unblind of a service answer, least of three rounds.
	node_json="$(cd "$SDK" && node test/bench.js 3)"
	go_json="$("$tmp/gointerop" bench -seconds 3)"
	echo "$node_json"
	echo "$go_json"
	NODE_JSON="$node_json" GO_JSON="$go_json" node -e '
		const n = JSON.parse(process.env.NODE_JSON), g = JSON.parse(process.env.GO_JSON);
		const row = (what, k) => console.log(`${what.padEnd(40)} Node ${(n[k] / 1000).toFixed(0).padStart(5)} µs   Go ${(g[k] / 1000).toFixed(1).padStart(6)} µs   Node/Go ${(n[k] / g[k]).toFixed(1)}`);
		row("blind+unblind, one item", "blindUnblindNsPerItem");
		row("blind+unblind, batch of 100, per item", "blindUnblindBatch100NsPerItem");
		row("scalar multiplication", "scalarMultNs");
	'
	echo "For reference, the Go benchmarks (wall time on one core):"
	go test -run xxx -bench 'ScalarMult|ClientBlindUnblind' ./pseudonymizer/ | grep '^Benchmark'
fi
echo
echo "TypeScript SDK: all tests passed"
