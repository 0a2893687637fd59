#!/usr/bin/env bash
# fuzz.sh runs every fuzz target of the module (the targets are found by
# name, so a new one is never forgotten) for FUZZTIME (default 2m) each, and
# prints one line per target with its executions. A target that finds a
# failure fails the script; go test leaves the input in the package's
# testdata/fuzz/<Target>/, where it becomes a seed that every `go test`
# replays.
#
# With SEEDS=1, up to 16 of the inputs the fuzzer found interesting are also
# copied into testdata/fuzz/<Target>/ (commit them after a long run).
#
# The test command (scripts/test.sh) runs it with FUZZTIME=3s SEEDS=0.
#   scripts/fuzz.sh                               # all targets, 2 minutes each
#   FUZZTIME=30s scripts/fuzz.sh ./internal/transit FuzzOpen
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-2m}"
SEEDS="${SEEDS:-0}"
cache="$(go env GOCACHE)/fuzz/$(go list -m)"
summary=()

run() { # package dir, target
	local pkg="$1" target="$2" out
	out="$(mktemp)"
	echo "== $pkg $target ($FUZZTIME)"
	# Go 1.26's fuzz coordinator can end a run at the -fuzztime deadline with
	# a bare "context deadline exceeded" and no failing input
	# (go.dev/issue/75804, fixed in Go 1.27): such a run is tried again (three tries).
	# A run that found something writes "Failing input written to" and
	# fails at once.
	local try
	for try in 1 2 3; do
		if go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" >"$out" 2>&1; then
			break
		fi
		if [ "$try" -lt 3 ] && grep -q 'context deadline exceeded' "$out" && ! grep -q 'Failing input written' "$out"; then
			echo "fuzz.sh: $pkg $target: the fuzz coordinator's deadline race (go.dev/issue/75804), no failing input: once more"
			continue
		fi
		cat "$out"; rm -f "$out"
		echo "fuzz.sh: $pkg $target failed" >&2
		exit 1
	done
	local execs
	execs="$(grep -o 'execs: [0-9]*' "$out" | tail -1 | cut -d' ' -f2 || true)"
	summary+=("$(printf '%-24s %-34s %10s execs' "$pkg" "$target" "${execs:-?}")")
	rm -f "$out"
	if [ "$SEEDS" = 1 ]; then
		local src="$cache/${pkg#./}/$target" dst="${pkg#./}/testdata/fuzz/$target"
		if [ -d "$src" ]; then
			mkdir -p "$dst"
			ls "$src" | head -16 | while read -r f; do cp "$src/$f" "$dst/$f"; done
		fi
	fi
}

if [ $# -eq 2 ]; then
	run "$1" "$2"
else
	for pkg in $(go list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.Dir}}{{end}}' ./...); do
		rel="./${pkg#"$PWD"/}"
		for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$pkg"/*_test.go 2>/dev/null | sed 's/^func //'); do
			run "$rel" "$target"
		done
	done
fi
printf '%s\n' "${summary[@]}"
