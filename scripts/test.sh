#!/usr/bin/env bash
# test.sh is the project's test command (README, CI): formatting, vet,
# staticcheck, every package's tests with the race detector, then the
# end-to-end suite on a real Vault and the built binaries. It needs only Go;
# it builds the tools it uses (staticcheck, Vault) into .cache/ once.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOBIN="$PWD/.cache/bin"
export PATH="$GOBIN:$PATH"
STATICCHECK_VERSION=0.8.2

step() { printf '\n== %s\n' "$*"; }

step "gofmt"
unformatted="$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.cache/*'))"
if [ -n "$unformatted" ]; then echo "gofmt would change:"; echo "$unformatted"; exit 1; fi

step "go vet"
go vet ./...

step "staticcheck"
if ! staticcheck -version 2>/dev/null | grep -q "($STATICCHECK_VERSION)"; then
	go install "honnef.co/go/tools/cmd/staticcheck@v$STATICCHECK_VERSION"
fi
staticcheck ./...

step "bench module (circl comparison, charts): vet, staticcheck, tests"
(cd bench && go vet ./... && staticcheck ./... && go test -count=1 ./...)

step "proto: buf lint, and the generated code is up to date"
scripts/gen-proto.sh
if ! git diff --exit-code --stat -- proto/; then
	echo "the generated gRPC code differs from proto/*.proto: run scripts/gen-proto.sh and commit"; exit 1
fi

step "Vault server binary (built once, cached)"
VAULT_BIN="$(scripts/vault-bin.sh)"
export VAULT_BIN
echo "$VAULT_BIN"

step "unit and integration tests (-race)"
go test -race -count=1 -timeout 20m $(go list ./... | grep -v '/e2e$')

step "benchmarks of both modules run once (-benchtime=1x), so that they keep compiling and running; no number is checked"
go test -count=1 -run '^$' -bench . -benchtime=1x $(grep -rl --include='*_test.go' '^func Benchmark' --exclude-dir=bench --exclude-dir=e2e --exclude-dir=node_modules --exclude-dir=.cache . | xargs -r -n1 dirname | sort -u) && (cd bench && go test -count=1 -run '^$' -bench . -benchtime=1x ./...)

step "fuzz: every target of the module for a short budget (scripts/fuzz.sh runs them longer)"
FUZZTIME="${FUZZTIME:-3s}" SEEDS=0 scripts/fuzz.sh

if [ -d e2e ]; then
	step "end-to-end tests (built binaries, real Vault, mTLS)"
	out="$(mktemp)"
	trap 'rm -f "$out"' EXIT
	set +e
	go test -count=1 -timeout 20m -v ./e2e/... >"$out" 2>&1
	rc=$?
	set -e
	grep -E '^(=== RUN|--- (PASS|FAIL|SKIP)|PASS|FAIL|ok )' "$out" | grep -v '^=== RUN' || true
	if [ $rc -ne 0 ]; then cat "$out"; exit $rc; fi
	if [ "${CI:-}" = "true" ] && grep -q -- '--- SKIP' "$out"; then
		echo "e2e tests were skipped under CI=true: that is a failure"; exit 1
	fi
fi

step "TypeScript SDK (sdk/typescript): build, unit and vector tests, REST gateway and Go SDK interop, Chromium"
scripts/test-typescript.sh
echo
echo "all tests passed"
