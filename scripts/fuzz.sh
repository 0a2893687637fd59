#!/usr/bin/env bash
# fuzz.sh runs every fuzz target of the module for FUZZTIME (default 30s)
# each, then copies up to 16 of the inputs the fuzzer found interesting into
# the package's testdata/fuzz/<Target>/ seed corpus, which `go test` replays
# on every run. Not part of the test command: run it by hand after touching a
# decoder, and commit the new seeds.
#   scripts/fuzz.sh                 # all targets
#   scripts/fuzz.sh ./internal/transit FuzzOpen
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-30s}"
cache="$(go env GOCACHE)/fuzz/$(go list -m)"

run() { # package dir, target
	local pkg="$1" target="$2"
	echo "== $pkg $target ($FUZZTIME)"
	go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME"
	local src="$cache/${pkg#./}/$target" dst="${pkg#./}/testdata/fuzz/$target"
	if [ -d "$src" ]; then
		mkdir -p "$dst"
		ls "$src" | head -16 | while read -r f; do cp "$src/$f" "$dst/$f"; done
	fi
}

if [ $# -eq 2 ]; then run "$1" "$2"; exit 0; fi
for pkg in $(go list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.Dir}}{{end}}' ./...); do
	rel="./${pkg#"$PWD"/}"
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$pkg"/*_test.go 2>/dev/null | sed 's/^func //'); do
		run "$rel" "$target"
	done
done
