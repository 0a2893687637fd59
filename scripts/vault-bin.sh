#!/usr/bin/env bash
# vault-bin.sh builds the HashiCorp Vault server from its Go module, once, and
# prints the path of the binary. The binary is cached under .cache/vault/ in
# the checkout (git-ignored) and, when writable, in ${XDG_CACHE_HOME:-~/.cache}
# so that a fresh clone on the same machine does not rebuild it.
#
# Vault is not a Debian package and no prebuilt binary can be downloaded here,
# but its module is on the Go module proxy. v1.21.0 builds once the go.mod
# replace lines that point to ./nested modules are removed; later 1.21.x
# patch releases do not build that way.
#
# With --cached it only prints the path of a cached binary (either cache),
# and fails (status 1) without building when there is none.
set -euo pipefail

VAULT_VERSION="${VAULT_VERSION:-v1.21.0}"
top="$(cd "$(dirname "$0")/.." && pwd)"
local_dir="$top/.cache/vault"
local_bin="$local_dir/vault-$VAULT_VERSION"
shared_dir="${XDG_CACHE_HOME:-$HOME/.cache}/pseudonymizer-vault"
shared_bin="$shared_dir/vault-$VAULT_VERSION"

works() { [ -x "$1" ] && "$1" version >/dev/null 2>&1; }

if works "$local_bin"; then echo "$local_bin"; exit 0; fi
if [ "${1:-}" = --cached ]; then
	if works "$shared_bin"; then echo "$shared_bin"; exit 0; fi
	exit 1
fi
mkdir -p "$local_dir"
# One build at a time: test packages run in parallel and each may call this
# script. The others wait here, then find the binary cached.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$local_dir/.build.lock"
	flock 9
	if works "$local_bin"; then echo "$local_bin"; exit 0; fi
fi
if works "$shared_bin"; then
	cp "$shared_bin" "$local_bin.tmp" && mv "$local_bin.tmp" "$local_bin"
	echo "$local_bin"; exit 0
fi

echo "vault-bin: building Vault $VAULT_VERSION from the Go module proxy (5-10 minutes, once)" >&2
moddir="$(go mod download -json "github.com/hashicorp/vault@$VAULT_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -n "$moddir" ] && [ -d "$moddir" ] || { echo "vault-bin: go mod download failed" >&2; exit 1; }
work="$(mktemp -d "${TMPDIR:-/tmp}/vault-src.XXXXXX")"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
cp -r "$moddir/." "$work/"
chmod -R u+w "$work"
# Drop replace directives that point into the (absent) nested modules.
sed -i -E '/^replace[[:space:]].*=>[[:space:]]*\.\//d; /^[[:space:]]+[^[:space:]].*=>[[:space:]]*\.\//d' "$work/go.mod"
(cd "$work" && GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' -o "$local_bin.tmp" .)
mv "$local_bin.tmp" "$local_bin"
works "$local_bin" || { echo "vault-bin: built binary does not run" >&2; exit 1; }
if mkdir -p "$shared_dir" 2>/dev/null; then cp "$local_bin" "$shared_bin.tmp" 2>/dev/null && mv "$shared_bin.tmp" "$shared_bin" || true; fi
echo "$local_bin"
